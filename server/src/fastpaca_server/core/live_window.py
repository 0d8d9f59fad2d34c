"""The LLM window kept incrementally: amortised O(1) work per appended message.

:mod:`.window` states the window's rules as plain functions over a list of
messages (units, orphan results, ``trim``, ``strip_parts``). Re-running them
over the whole window on every append costs O(window) on the one Raft
thread: at ``last_n``'s limit of 100,000 messages that is a second per
append, and every other context waits. :class:`LiveWindow` keeps the same
window, with the same rules, as an index that each operation updates in
proportion to the messages it touches:

* every message has a *position* (a counter that only grows) and belongs to
  a unit (the message plus the messages whose ``tool_result``s answer its
  ``tool_call``s); ``units_of_call`` finds a call's unit, so an appended
  result joins its call's unit in O(its parts). Most messages are a unit of
  their own: they have no :class:`_Unit` object (the message's own token
  count and pinning are the unit's), which keeps the index at about 100
  bytes per window message;
* running sums: tokens, tokens of pinned units, messages of unpinned units;
* ``order``, a deque of positions: trimming drops the oldest unpinned unit
  by popping from its left (positions of dropped or pinned units are popped
  as they come up, once each);
* ``strip_position``: ``skip_parts`` strips units that start before the
  current turn; every position before it has been stripped already, and it
  only moves forward.

The result is the window :func:`.window.apply_policy` would compute from
scratch (the core tests compare the two on random histories). Rebuilding from
a list (a compaction, a config change, a snapshot) is O(window), once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from . import window as rules
from .models import DEFAULT_KEEP_TOOL_RESULTS, JSONObject, Message


class _Unit:
    """Window positions that stay or go together, with their sums."""

    __slots__ = ("calls", "members", "pinned", "stripped", "tokens")

    def __init__(self) -> None:
        self.members: list[int] = []
        self.calls: list[str] = []
        self.tokens = 0
        self.pinned = False
        self.stripped = False


class LiveWindow:
    """One context's window and its index (see the module docstring).

    ``mask`` says which pins keep a message (:func:`.window.pin_mask`);
    ``track_outputs`` keeps the positions of messages with tool output in
    order, for ``strip_tool_results``.
    """

    __slots__ = (
        "_changed",
        "_next_position",
        "_order",
        "_outputs",
        "_pending_strip",
        "_removed",
        "_strip_position",
        "_unit_of",
        "_units_of_call",
        "entries",
        "mask",
        "may_hold_orphans",
        "pinned_tokens",
        "tokens",
        "unpinned_count",
    )

    def __init__(self, mask: int = rules.PIN_ALL, track_outputs: bool = False) -> None:
        self.mask = mask
        self._outputs: deque[int] | None = deque() if track_outputs else None
        """Positions of messages that may hold tool output, oldest first (some gone)."""
        self._removed: list[int | None] = []
        self._changed: list[int] = []
        self.entries: dict[int, Message] = {}
        self._unit_of: dict[int, _Unit] = {}
        """Units of more than a plain message (calls, several members, stripped);
        a position missing here is a unit of its own message."""
        self._units_of_call: dict[str, list[_Unit]] = {}
        """Units holding a call with this id, oldest first; the last one is where
        a result for it goes (ids are meant to be unique, but need not be)."""
        self._order: deque[int] = deque()
        self._next_position = 0
        self._strip_position = 0
        self._pending_strip: list[_Unit] = []
        self.tokens = 0
        self.pinned_tokens = 0
        self.unpinned_count = 0
        self.may_hold_orphans = False
        """True when results without their call may be in the window (a
        replacement, or appends under ``manual``): the next orphan strip
        rebuilds the window once instead of looking at new messages only."""

    @classmethod
    def of(
        cls, messages: Iterable[Message], mask: int = rules.PIN_ALL, track_outputs: bool = False
    ) -> LiveWindow:
        """A window holding ``messages`` as they are (no orphan stripping)."""
        live = cls(mask, track_outputs)
        for message in messages:
            live.add(message, strip_orphans=False)
        return live

    def rebuilt(self, messages: Iterable[Message]) -> LiveWindow:
        """A new window of ``messages`` with this one's mask and tracking."""
        return LiveWindow.of(messages, self.mask, self._outputs is not None)

    # --- reading -------------------------------------------------------------

    def messages(self) -> list[Message]:
        return list(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    # --- appending -------------------------------------------------------------

    def add(self, message: Message, *, strip_orphans: bool) -> bool:
        """Append ``message``; with ``strip_orphans`` its results without a call in
        the window are removed first. Returns whether it entered the window (a
        message made only of orphan results does not)."""
        kept = rules.without_orphan_results(message, self._units_of_call.__contains__)
        if kept is not message:
            if not strip_orphans:
                self.may_hold_orphans = True
            elif kept is None:
                return False
            else:
                message = kept
        results = message.results
        own_calls = message.calls
        position = self._next_position
        self._next_position += 1
        self.entries[position] = message
        self._order.append(position)
        if self._outputs is not None and rules.may_hold_output(message):
            self._outputs.append(position)
        joined = {id(u): u for c in results or () if (u := self._unit_of_call(c)) is not None}
        if not joined and not own_calls:
            self._place(position, message)
            return True
        unit = self._merge(list(joined.values())) if joined else _Unit()
        self._join(unit, position, message)
        for call in own_calls or ():
            self._units_of_call.setdefault(call, []).append(unit)
            unit.calls.append(call)
        if unit.stripped:
            self._pending_strip.append(unit)
        return True

    def _place(self, position: int, message: Message) -> None:
        """Account for ``message`` at ``position`` as a unit of its own."""
        self.tokens += message.token_count
        if message.pinned & self.mask:
            self.pinned_tokens += message.token_count
        else:
            self.unpinned_count += 1

    def _unit_at(self, position: int) -> _Unit:
        """The unit of ``position``, made into a :class:`_Unit` if it is a plain message."""
        unit = self._unit_of.get(position)
        if unit is None:
            message = self.entries[position]
            unit = _Unit()
            unit.members.append(position)
            unit.tokens = message.token_count
            unit.pinned = bool(message.pinned & self.mask)
            self._unit_of[position] = unit
        return unit

    def _join(self, unit: _Unit, position: int, message: Message) -> None:
        was_pinned = unit.pinned
        self._unaccount(unit)
        unit.members.append(position)
        unit.tokens += message.token_count
        unit.pinned = was_pinned or bool(message.pinned & self.mask)
        self._unit_of[position] = unit
        self.tokens += message.token_count
        self._account(unit)

    def _merge(self, units: list[_Unit]) -> _Unit:
        """Join several units into the one with the most members (rarely more than one)."""
        if len(units) == 1:
            return units[0]
        units.sort(key=lambda u: len(u.members), reverse=True)
        into = units[0]
        self._unaccount(into)
        for other in units[1:]:
            self._unaccount(other)
            into.members.extend(other.members)
            into.calls.extend(other.calls)
            into.tokens += other.tokens
            into.pinned = into.pinned or other.pinned
            into.stripped = into.stripped or other.stripped
            for position in other.members:
                self._unit_of[position] = into
            for call in set(other.calls):
                self._replace_unit_of_call(call, other, into)
        into.members.sort()
        self._account(into)
        return into

    def _account(self, unit: _Unit) -> None:
        if unit.pinned:
            self.pinned_tokens += unit.tokens
        else:
            self.unpinned_count += len(unit.members)

    def _unaccount(self, unit: _Unit) -> None:
        if unit.pinned:
            self.pinned_tokens -= unit.tokens
        else:
            self.unpinned_count -= len(unit.members)

    # --- trimming ----------------------------------------------------------------

    def trim(self, *, max_tokens: int, max_messages: int | None, keep_newest: bool) -> None:
        """Drop the oldest unpinned units until both limits hold (:func:`.window.trim`)."""
        newest_position = next(reversed(self.entries)) if keep_newest and self.entries else None
        newest = None if newest_position is None else self._unit_of.get(newest_position)
        skipped: list[int] = []
        order = self._order
        entries = self.entries
        while order and (
            self.tokens > max_tokens
            or (max_messages is not None and self.unpinned_count > max_messages)
        ):
            position = order.popleft()
            message = entries.get(position)
            if message is None:
                continue  # dropped already
            unit = self._unit_of.get(position)
            if unit is None:  # a plain message, its own unit
                if message.pinned & self.mask:
                    continue  # never droppable: not needed in the order again
                if position == newest_position:
                    skipped.append(position)
                    continue
                self.tokens -= message.token_count
                self.unpinned_count -= 1
                del entries[position]
                self._removed.append(message.seq)
                continue
            if unit.pinned:
                continue
            if unit is newest:
                skipped.append(position)
                continue
            self._drop(unit)
        order.extendleft(reversed(skipped))

    def _drop(self, unit: _Unit) -> None:
        self._unaccount(unit)
        self.tokens -= unit.tokens
        for position in sorted(unit.members):
            self._removed.append(self.entries.pop(position).seq)
            del self._unit_of[position]
        for call in set(unit.calls):
            self._replace_unit_of_call(call, unit, None)

    # --- time_window ----------------------------------------------------------------

    def _first_droppable(self) -> tuple[int, Message] | None:
        """The oldest unit that a policy may drop, by its first position, unless it is
        the newest unit. Dropped and pinned positions in front are discarded from
        the order on the way (as :meth:`trim` does): each is passed once."""
        order = self._order
        entries = self.entries
        newest = next(reversed(entries)) if entries else None
        newest_unit = None if newest is None else self._unit_of.get(newest)
        while order:
            position = order[0]
            message = entries.get(position)
            if message is None:
                order.popleft()
                continue
            unit = self._unit_of.get(position)
            if (unit is None and message.pinned & self.mask) or (unit is not None and unit.pinned):
                order.popleft()
                continue
            if position == newest or (unit is not None and unit is newest_unit):
                return None
            return position, message
        return None

    def has_expired(self, cutoff: int) -> bool:
        """Whether the oldest droppable unit began before ``cutoff``."""
        first = self._first_droppable()
        return first is not None and first[1].created_at < cutoff

    def drop_expired(self, cutoff: int) -> None:
        """:func:`.window.drop_expired`: drop the oldest unpinned units while they
        began before ``cutoff`` (never the newest unit)."""
        while (first := self._first_droppable()) is not None:
            position, message = first
            if message.created_at >= cutoff:
                return
            self._order.popleft()
            unit = self._unit_of.get(position)
            if unit is None:
                self.tokens -= message.token_count
                self.unpinned_count -= 1
                del self.entries[position]
                self._removed.append(message.seq)
            else:
                self._drop(unit)

    # --- skip_parts ---------------------------------------------------------------

    def strip_older_turns(self, kinds: Sequence[str], turn_seq: int | None) -> None:
        """:func:`.window.strip_parts` for every unit that starts before the current turn.

        The turn starts at the first message with a seq at or after
        ``turn_seq`` (the newest user message's). Units before
        ``_strip_position`` were stripped already; a message that joined one of
        them since (a late tool result) waits in ``_pending_strip``.
        """
        prefixes = tuple(kinds)
        if not prefixes:
            return
        if turn_seq is None:
            # No user message was ever appended: the turn is found by role or
            # by the newest unit, which can only be done on the whole list (and
            # can move back, so nothing is skipped by position).
            messages = self.messages()
            start = rules.current_turn_start(messages)
            positions = list(self.entries)
            end = positions[start] if start < len(positions) else self._next_position
            position = min(self._strip_position, end)
        else:
            end = self._next_position
            position = self._strip_position
        while position < end:
            message = self.entries.get(position)
            if message is not None:
                if turn_seq is not None and message.seq is not None and message.seq >= turn_seq:
                    end = position
                    break
                unit = self._unit_of.get(position)
                if unit is None:
                    if not message.pinned & self.mask and self._strippable(message, prefixes):
                        self._strip_unit(self._unit_at(position), prefixes)
                elif not unit.pinned and not unit.stripped:
                    self._strip_unit(unit, prefixes)
            position += 1
        self._strip_position = max(self._strip_position, position)
        waiting = []
        for unit in self._pending_strip:
            if not unit.members or self._unit_of.get(unit.members[0]) is not unit or unit.pinned:
                continue  # dropped, merged or split since
            if unit.members[0] < end:
                self._strip_unit(unit, prefixes)
            else:
                waiting.append(unit)
        self._pending_strip = waiting

    @staticmethod
    def _strippable(message: Message, prefixes: tuple[str, ...]) -> bool:
        return rules.strip_unit([message], prefixes)[0] is not message

    def _strip_unit(self, unit: _Unit, prefixes: tuple[str, ...]) -> None:
        """Strip one unit's parts; what is left of it is cut into units again
        (a stripped call took its results with it, so the unit may fall apart)."""
        members = sorted(unit.members)
        stripped = rules.strip_unit([self.entries[p] for p in members], prefixes)
        self._unaccount(unit)
        self.tokens -= unit.tokens
        survivors: list[tuple[int, Message]] = []
        for position, message in zip(members, stripped, strict=True):
            self._unit_of.pop(position, None)
            original = self.entries[position]
            if message is None:
                del self.entries[position]
                self._removed.append(original.seq)
            else:
                if message is not original and original.seq is not None:
                    self._changed.append(original.seq)
                self.entries[position] = message
                survivors.append((position, message))
        owner: dict[str, _Unit] = {}
        for sub in rules.build_units([message for _, message in survivors]):
            if len(sub.indices) == 1 and not survivors[sub.indices[0]][1].calls:
                self._place(*survivors[sub.indices[0]])  # a plain message now
                continue
            part = _Unit()
            part.stripped = True
            for index in sub.indices:
                position, message = survivors[index]
                self._join(part, position, message)
                for call in rules.tool_call_ids(message):
                    owner[call] = part
                    part.calls.append(call)
        for call in set(unit.calls):  # the pieces take the unit's place for each call kept
            self._replace_unit_of_call(call, unit, owner.get(call))

    def _unit_of_call(self, call: str) -> _Unit | None:
        units = self._units_of_call.get(call)
        return units[-1] if units else None

    def _replace_unit_of_call(self, call: str, old: _Unit, new: _Unit | None) -> None:
        """Put ``new`` where ``old`` is in ``call``'s units (remove ``old`` for ``None``)."""
        units = self._units_of_call.get(call)
        if units is None:
            return
        replaced: list[_Unit] = []
        for unit in units:
            current = new if unit is old else unit
            if current is None:
                continue
            if current in replaced:  # keep the latest place of a unit listed twice
                replaced.remove(current)
            replaced.append(current)
        if replaced:
            self._units_of_call[call] = replaced
        else:
            del self._units_of_call[call]

    # --- what a policy run changed, and custom policies ------------------------------

    def take_changes(self) -> tuple[list[int | None], list[int]]:
        """Seqs removed and changed since the last call (see :class:`.window.WindowOps`)."""
        removed, changed = self._removed, self._changed
        self._removed, self._changed = [], []
        gone = set(removed)
        return removed, [seq for seq in dict.fromkeys(changed) if seq not in gone]

    def keep_only(self, kept: Sequence[Message]) -> None:
        """Keep only ``kept`` (a subsequence of the window): the index is rebuilt."""
        wanted = {id(message) for message in kept}
        removed = [m.seq for m in self.entries.values() if id(m) not in wanted]
        fresh = self.rebuilt(kept)
        for name in LiveWindow.__slots__:
            if name not in ("_removed", "_changed"):
                setattr(self, name, getattr(fresh, name))
        self._removed.extend(removed)

    # --- strip_tool_results ---------------------------------------------------------

    def clear_tool_results(self, options: JSONObject) -> None:
        """:func:`.window.clear_tool_results` from the tracked outputs.

        The newest ``keep`` outputs are found from the right; every tracked
        message left of them is looked at once: what cannot be cleared now
        (gone, pinned, excluded, cleared already, or no smaller as a
        placeholder) never can, and leaves the order. Only outputs that could
        be cleared but were not (the pass saved less than ``clear_at_least``)
        stay to be looked at again.
        """
        outputs = self._outputs
        if outputs is None:
            self._outputs = outputs = deque(
                p for p, m in self.entries.items() if rules.may_hold_output(m)
            )
        keep = int(options.get("keep", DEFAULT_KEEP_TOOL_RESULTS))
        boundary, partial = len(outputs), 0
        kept = 0
        for index in range(len(outputs) - 1, -1, -1):
            message = self.entries.get(outputs[index])
            if message is None:
                continue
            count = len(rules.output_parts(message))
            if kept + count >= keep:
                boundary, partial = index, count - (keep - kept)
                break
            kept += count
        else:
            boundary, partial = 0, 0
            if kept < keep:
                return  # fewer outputs than keep: nothing to clear
        candidates: list[tuple[int, Message, list[int]]] = []
        for index in range(boundary + (1 if partial else 0)):
            position = outputs[index]
            message = self.entries.get(position)
            if message is None:
                continue
            indices = rules.output_parts(message)
            if index == boundary:
                indices = indices[:partial]
            candidates.append((position, message, indices))
        names = self._call_name if options.get("exclude_tools") else (lambda call: None)
        changes, saved = rules.clear_choices(
            ((m, indices) for _, m, indices in candidates), options, self.mask, names
        )
        applied = bool(changes) and saved >= max(int(options.get("clear_at_least", 0)), 1)
        if applied:
            cleared = {id(old): new for old, new in changes}
            for position, message, _ in candidates:
                new = cleared.get(id(message))
                if new is not None:
                    self._replace(position, message, new)
        # What is left of the boundary cannot be cleared again, except outputs
        # that could have been and were not (the pass did not save enough).
        waiting = {id(old) for old, _ in changes} if not applied else set()
        keep_positions = [
            p for p, m, _ in candidates if id(m) in waiting and p != outputs[boundary]
        ]
        rest = list(outputs)[boundary:] if boundary < len(outputs) else []
        outputs.clear()
        outputs.extend(keep_positions)
        outputs.extend(rest)

    def _call_name(self, call: str) -> str | None:
        """The tool name of the newest call with id ``call`` in the window."""
        unit = self._unit_of_call(call)
        if unit is None:
            return None
        name = None
        for position in sorted(unit.members):
            message = self.entries.get(position)
            if message is None or not message.calls or call not in message.calls:
                continue
            for part in message.parts:
                if part.get("type") == rules.TOOL_CALL and str(part.get("id")) == call:
                    name = str(part.get("name"))
        return name

    def _replace(self, position: int, old: Message, new: Message) -> None:
        """Put ``new`` (the same message with other content) at ``position``."""
        delta = new.token_count - old.token_count
        self.entries[position] = new
        self.tokens += delta
        unit = self._unit_of.get(position)
        if unit is not None:
            unit.tokens += delta
            if unit.pinned:
                self.pinned_tokens += delta
        elif old.pinned & self.mask:
            self.pinned_tokens += delta
        if old.seq is not None:
            self._changed.append(old.seq)
