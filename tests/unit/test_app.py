# main.py's entry: a firmware that stops for any reason but Ctrl-C restarts the board.
import machine

import simworld
from firmware import app
from support import raises


class _Stopped:
    def __init__(self, by_user):
        self.stopped_by_user = by_user


def _with_main(fn):
    real = app.main
    app.main = fn
    try:
        app.run_on_board()
    finally:
        app.main = real


def test_a_crash_restarts_the_board():
    def crash():
        raise RuntimeError("a task died")

    with raises(simworld.SimReset):
        _with_main(crash)
    assert machine.reset_cause() == machine.HARD_RESET


def test_an_unexpected_stop_restarts_the_board():
    with raises(simworld.SimReset):
        _with_main(lambda: _Stopped(False))


def test_ctrl_c_leaves_the_developer_at_the_repl():
    _with_main(lambda: _Stopped(True))  # returns: no reset
    assert machine.reset_cause() == machine.PWRON_RESET
