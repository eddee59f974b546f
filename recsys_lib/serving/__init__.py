"""Online recommendations: the served model (hot-swappable), query encoding, ANN search, filters, fallback.

:class:`~recsys_lib.serving.recommender.Recommender` answers requests from the
online store (:mod:`recsys_lib.online`) and the exported model; the HTTP API
(:mod:`recsys_lib.api`) is a thin face over it.
"""
