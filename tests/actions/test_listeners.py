"""Listeners: each call reaches every listener, in order, with its arguments as given."""

from __future__ import annotations

import inspect

from oomhero.actions.listener import Listener, Listeners

EVENTS = [
    name
    for name, member in vars(Listener).items()
    if inspect.isfunction(member) and not name.startswith("_")
]


class Recorder(Listener):
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def __getattribute__(self, attr: str):
        if attr in EVENTS:
            return lambda *args: self.calls.append((self.name, attr, args))
        return super().__getattribute__(attr)


def test_every_listener_method_is_fanned_out_in_order():
    calls: list = []
    listeners = Listeners([Recorder("first", calls), Recorder("second", calls)])
    for event in EVENTS:
        # Positional, as the engine calls them: one distinct value per parameter.
        arity = len(inspect.signature(getattr(Listener, event)).parameters) - 1
        args = tuple(f"{event}-{i}" for i in range(arity))
        assert getattr(Listeners, event) is not getattr(Listener, event), f"{event} not fanned out"
        calls.clear()
        getattr(listeners, event)(*args)
        assert calls == [("first", event, args), ("second", event, args)]
    assert len(EVENTS) == 9


def test_the_signatures_are_the_listeners():
    # What an editor shows at engine.listeners.<method>, and what a type checker holds calls to.
    for event in EVENTS:
        assert inspect.signature(getattr(Listeners, event)) == inspect.signature(
            getattr(Listener, event)
        )


def test_page_cache_is_wanted_when_any_listener_wants_it():
    class Gauge(Listener):
        wants_page_cache = True

    listeners = Listeners([Listener()])
    assert not listeners.wants_page_cache
    listeners.append(Gauge())
    assert listeners.wants_page_cache
