"""``maestro.client``: the Python client, importable from the server's distribution too.

The client is its own distribution, ``maestro-client`` (clients/python, package ``maestro_client``),
so that notebooks and scripts install it without the server's dependencies; this module re-exports
it for those who have the server installed (``make setup`` installs both). docs/client.md.
"""

from maestro_client import *  # noqa: F403
from maestro_client import __all__  # noqa: F401
