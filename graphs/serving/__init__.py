"""Serving jobs beside the graph: the nearline ``precompute`` (local or on Ray) and the live
``events`` stream that keeps a shopper's memory current."""
