"""The network edge: fetching over HTTP behind a small interface."""
