"""numpy implementations of the deep-learning ops (conv, pool, LCN, ...); filled as they land."""
