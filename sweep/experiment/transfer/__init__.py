"""Transfer heads' data: a two-class view of a dataset, a frozen backbone, and
its features cached for the engine to hold where images would be."""
