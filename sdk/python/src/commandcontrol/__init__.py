"""commandcontrol: the Python workbench SDK (list, watch and call a fleet).

    from commandcontrol import Workbench
    with Workbench.connect("nats://127.0.0.1:4222", key_file="admin.nk") as wb:
        print(wb.call("current-load").summary)
"""

from .client import DEFAULT_TIMEOUT, AsyncWorkbench
from .control import History
from .errors import (BadRequest, CCError, Conflict, ConnectError, Forbidden, NoKey, NoMatch, NoService, NotFound,
                     TooManyRequests, cc_error)
from .selector import Selector
from .sync import Workbench
from .types import (EVENT_PRESENT, EVENT_RESYNC, EVENT_STALE, EVENT_SYNCED, FOUND_BY_RESYNC, STATUS_ERROR,
                    STATUS_NO_RESPONSE, STATUS_OK, CallResult, Facts, Location, PresenceEvent, PresenceSnapshot,
                    Reply, Server)

__version__ = "0.1.0"

__all__ = [
    "AsyncWorkbench", "Workbench", "Selector", "DEFAULT_TIMEOUT", "History",
    "CCError", "BadRequest", "Forbidden", "NotFound", "Conflict", "TooManyRequests", "NoService", "NoMatch", "ConnectError",
    "NoKey", "cc_error",
    "Server", "Facts", "PresenceSnapshot", "PresenceEvent", "Reply", "CallResult", "Location",
    "STATUS_OK", "STATUS_ERROR", "STATUS_NO_RESPONSE",
    "EVENT_PRESENT", "EVENT_SYNCED", "EVENT_STALE", "EVENT_RESYNC", "FOUND_BY_RESYNC",
]
