"""``python -m apeewee demo``: see apeewee.demo."""

from apeewee.demo import main

raise SystemExit(main())
