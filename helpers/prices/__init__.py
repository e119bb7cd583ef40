"""The BTC/KES price feed: one small adapter per public source, and the median of those that agree."""
