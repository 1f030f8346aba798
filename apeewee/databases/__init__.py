"""The three apeewee databases: peewee's classes over the async drivers and one pool."""

from .base import AsyncDatabase
from .mysql import MySQLDatabase
from .postgres import PostgresqlDatabase
from .sqlite import SqliteDatabase

__all__ = ["AsyncDatabase", "MySQLDatabase", "PostgresqlDatabase", "SqliteDatabase"]
