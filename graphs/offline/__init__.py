"""The offline path: ``ingest`` (a data set into the catalog, the memory and the fitted models)
and ``OfflineRunner`` (the compiled graph over many shoppers with ``graph.batch``)."""
