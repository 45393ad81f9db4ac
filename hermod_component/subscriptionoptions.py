"""
The XEP-0060 §6.3 subscription options beyond delivery and header filters: digests, expiry,
bodies and presence-based delivery; how they are validated and what they mean for delivery.

The values are stored with the subscription as plain strings (like every subscription option)
and read back into a L{DeliveryMode}, which the policy caches per subscription so that
subscriptions without any of these options cost nothing on the publish path. No XML here.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence

import attrs

from hermod_component.errors import InvalidSubscriptionOptions

DIGEST = "pubsub#digest"
DIGEST_FREQUENCY = "pubsub#digest_frequency"
EXPIRE = "pubsub#expire"
INCLUDE_BODY = "pubsub#include_body"
SHOW_VALUES = "pubsub#show-values"

#: The C{<show/>} values of XEP-0060's C{pubsub#show-values}; C{online} stands for an
#: available presence without C{<show/>}.
SHOWS = ("away", "chat", "dnd", "online", "xa")
#: The digest period when C{pubsub#digest} is on without a frequency (XEP-0060: a day).
DEFAULT_DIGEST_FREQUENCY = 86_400_000
#: The longest digest period accepted, in milliseconds (a week).
MAX_DIGEST_FREQUENCY = 7 * 86_400_000
#: The C{pubsub#expire} value that ends a subscription when its subscriber goes unavailable.
PRESENCE = "presence"


def _one(var: str, values: Sequence[str]) -> str:
    if len(values) != 1:
        raise InvalidSubscriptionOptions(f"{var} takes exactly one value")
    return values[0].strip()


def _boolean(var: str, values: Sequence[str]) -> tuple[str, ...]:
    value = _one(var, values).lower()
    if value in ("1", "true"):
        return ("1",)
    if value in ("0", "false"):
        return ("0",)
    raise InvalidSubscriptionOptions(f"{var} must be a boolean, not {value!r}")


def _frequency(var: str, values: Sequence[str]) -> tuple[str, ...]:
    value = _one(var, values)
    try:
        number = int(value)
    except ValueError:
        raise InvalidSubscriptionOptions(
            f"{var} is a number of milliseconds, not {value!r}"
        ) from None
    if not 1 <= number <= MAX_DIGEST_FREQUENCY:
        raise InvalidSubscriptionOptions(
            f"{var} must be between 1 and {MAX_DIGEST_FREQUENCY} milliseconds, not {number}"
        )
    return (str(number),)


def parseDateTime(value: str) -> float:
    """
    A XEP-0082 C{dateTime} (C{CCYY-MM-DDThh:mm:ss[.sss]TZD}) as POSIX seconds.

    @raise ValueError: not such a dateTime, or one without a time zone.
    """
    if "T" not in value:
        raise ValueError("a dateTime has a date and a time")
    stamp = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    if stamp.tzinfo is None:
        raise ValueError("a dateTime needs a time zone (Z or +hh:mm)")
    return stamp.timestamp()


def _expire(var: str, values: Sequence[str]) -> tuple[str, ...]:
    value = _one(var, values)
    if value == PRESENCE:
        return (value,)
    try:
        parseDateTime(value)
    except ValueError as e:
        raise InvalidSubscriptionOptions(
            f"{var} is a XEP-0082 dateTime or 'presence', not {value!r}: {e}"
        ) from None
    return (value,)


def _shows(var: str, values: Sequence[str]) -> tuple[str, ...]:
    chosen = {value.strip() for value in values if value.strip()}
    unknown = sorted(chosen - set(SHOWS))
    if unknown:
        raise InvalidSubscriptionOptions(
            f"{var} values are {', '.join(SHOWS)}, not {unknown[0]!r}"
        )
    return tuple(show for show in SHOWS if show in chosen)


#: Validation of each option this module owns: submitted values in, values to store out.
PARSERS: dict[str, Callable[[str, Sequence[str]], tuple[str, ...]]] = {
    DIGEST: _boolean,
    DIGEST_FREQUENCY: _frequency,
    EXPIRE: _expire,
    INCLUDE_BODY: _boolean,
    SHOW_VALUES: _shows,
}


def defaultValues(options: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """
    The form values of this module's options, with defaults for those not set.
    """
    return {
        DIGEST: list(options.get(DIGEST, ("0",))),
        DIGEST_FREQUENCY: list(options.get(DIGEST_FREQUENCY, (str(DEFAULT_DIGEST_FREQUENCY),))),
        EXPIRE: list(options.get(EXPIRE, ())),
        INCLUDE_BODY: list(options.get(INCLUDE_BODY, ("0",))),
        SHOW_VALUES: list(options.get(SHOW_VALUES, ())),
    }


@attrs.frozen
class DeliveryMode:
    """
    How notifications of one subscription differ from a plain one's.

    @ivar digestFrequency: Milliseconds over which notifications are gathered into one digest
        message, or L{None} for immediate delivery.
    @ivar includeBody: Whether notifications carry a human-readable C{<body/>}.
    @ivar shows: The C{<show/>} values (L{SHOWS}) of which the subscriber needs an available
        resource for delivery, or L{None} for delivery whatever its presence.
    """

    digestFrequency: int | None = None
    includeBody: bool = False
    shows: frozenset[str] | None = None


def deliveryMode(options: Mapping[str, Sequence[str]]) -> DeliveryMode | None:
    """
    The delivery mode of a subscription with these options; L{None} for a plain one.
    """
    if not options:
        return None
    digest = tuple(options.get(DIGEST, ())) == ("1",)
    body = tuple(options.get(INCLUDE_BODY, ())) == ("1",)
    shows = options.get(SHOW_VALUES)
    if not digest and not body and not shows:
        return None
    frequency = None
    if digest:
        frequency = int(options.get(DIGEST_FREQUENCY, (str(DEFAULT_DIGEST_FREQUENCY),))[0])
    return DeliveryMode(frequency, body, frozenset(shows) if shows else None)


def expiry(options: Mapping[str, Sequence[str]]) -> float | str | None:
    """
    When a subscription with these options ends: POSIX seconds, L{PRESENCE}, or L{None}.
    """
    given = options.get(EXPIRE)
    if not given:
        return None
    if given[0] == PRESENCE:
        return PRESENCE
    return parseDateTime(given[0])


def directRecipient(
    to: str, subscriptionIds: list[str], options: Sequence[Mapping[str, Sequence[str]]]
) -> list[tuple[str, Sequence[str]]]:
    """
    The recipient list of a notification sent straight to one JID for some of its
    subscriptions (the last item): with a body if one of them asks for it; never digested.

    @param options: The options of those subscriptions.
    """
    if any(tuple(o.get(INCLUDE_BODY, ())) == ("1",) for o in options):
        result = RecipientList()
        result.append((to, subscriptionIds))
        result.bodies.add(to)
        return result
    return [(to, subscriptionIds)]


class RecipientList(list[tuple[str, Sequence[str]]]):
    """
    The recipients of one notification (C{(jid, subids)}, as every notifier call takes),
    together with what differs for the subscriptions that have a L{DeliveryMode}.

    Iterating gives the recipients to write to now, as for a plain list; the notifier reads
    the two extra attributes. The list is true when it holds recipients or digest entries, so
    that callers that skip empty recipient lists still hand digest entries over.

    @ivar bodies: Recipients (of the list) whose message carries a C{<body/>}.
    @ivar digests: C{(jid, subid, milliseconds)} of subscriptions whose notification joins
        their digest instead of being written now.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bodies: set[str] = set()
        self.digests: list[tuple[str, str, int]] = []

    def __bool__(self) -> bool:
        return len(self) > 0 or bool(self.digests)
