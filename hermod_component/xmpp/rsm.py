"""
XEP-0059 Result Set Management: the C{<set/>} of requests and responses.

Used by archive queries (L{hermod_component.xmpp.mam}), item retrieval and disco#items.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component.xmpp.errors import badRequest

NS_RSM = "http://jabber.org/protocol/rsm"


@attrs.frozen
class ResultSetRequest:
    """
    The C{<set xmlns='http://jabber.org/protocol/rsm'/>} of a request (XEP-0059).

    @ivar before: An id, C{""} for the last page, or L{None} when absent.
    """

    maxResults: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None


def parseResultSet(parent: domish.Element) -> ResultSetRequest | None:
    """
    The RSM request among C{parent}'s children, or L{None}.

    @raise StanzaError: C{bad-request} for a malformed C{max} or C{index}.
    """
    for element in parent.elements(NS_RSM, "set"):
        values: dict[str, Any] = {}
        for child in element.elements():
            text = str(child).strip()
            if child.name in ("max", "index"):
                try:
                    number = int(text)
                except ValueError:
                    raise badRequest(text=f"RSM {child.name} must be a number") from None
                if number < 0:
                    raise badRequest(text=f"RSM {child.name} must not be negative")
                values["maxResults" if child.name == "max" else "index"] = number
            elif child.name in ("after", "before"):
                values[child.name] = text
        return ResultSetRequest(**values)
    return None


def resultSetElement(
    first: str | None, last: str | None, count: int | None, firstIndex: int | None = None
) -> domish.Element:
    """
    The RSM C{<set/>} of a response: first and last id of the page (none when it is empty)
    and the size of the whole result set.
    """
    element = domish.Element((NS_RSM, "set"))
    if first is not None and last is not None:
        firstElement = element.addElement("first", content=first)
        if firstIndex is not None:
            firstElement["index"] = str(firstIndex)
        element.addElement("last", content=last)
    if count is not None:
        element.addElement("count", content=str(count))
    return element


def pageOf(
    ids: list[str], request: ResultSetRequest, defaultSize: int, largest: int
) -> tuple[int, int]:
    """
    The slice C{[first, end)} of an in-memory list of ids that an RSM request asks for:
    after an id, before one (C{""}: the last page) or from an index.

    @raise StanzaError: C{item-not-found} when C{after} or C{before} is not in C{ids}.
    """
    size = min(defaultSize if request.maxResults is None else request.maxResults, largest)
    if request.before is not None:
        if request.before == "":
            end = len(ids)
        elif request.before in ids:
            end = ids.index(request.before)
        else:
            raise StanzaError("item-not-found", text="no such item to page before")
        return max(end - size, 0), end
    if request.after is not None:
        if request.after not in ids:
            raise StanzaError("item-not-found", text="no such item to page after")
        first = ids.index(request.after) + 1
    else:
        first = min(request.index or 0, len(ids))
    return first, min(first + size, len(ids))
