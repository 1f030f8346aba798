"""Query execution (compile with peewee, run on the driver) and awaitable query classes."""
