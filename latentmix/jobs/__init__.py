"""The jobs behind the ``latentmix`` commands, one module each, every one called as
``job(config, *, quiet=...) -> result``: ``grid``, ``walk``, ``synthesize`` (with ``sources`` and ``shards``),
``evaluate`` (with ``evaluate_attributes``), ``edit`` (with ``attributes``), ``evaluate_pairs``, ``export``,
``augment``, ``compare`` and ``demo``.
"""
