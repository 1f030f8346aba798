"""Driver adapters: the only modules that import aiosqlite, asyncpg or aiomysql."""
