"""pithnode: a mirror node for the Pith open graph."""

__version__ = "0.1.0"
