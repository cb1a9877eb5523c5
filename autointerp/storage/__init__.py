"""Storage: Delta tables with partition-exact writes (`delta`), the tables' schemas (`schemas`),
and the one hashing scheme for keys and versions (`hashing`)."""
