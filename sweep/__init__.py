"""sweep: measure what label-flip poisoning does to a classifier."""
