"""Row weights: the strategy registry, the weighting maths and their Spark phases."""
