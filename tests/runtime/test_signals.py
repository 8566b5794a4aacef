"""Stop requests: signals while watching, and requests from code (Experiment.stop())."""

from __future__ import annotations

import os
import signal

import pytest

from cadence.runtime.signals import StopRequests


def test_a_request_keeps_its_first_reason_until_reset():
    requests = StopRequests()
    requests.request("Experiment.stop()")
    requests.request("later")
    assert requests.requested and requests.reason == "Experiment.stop()"
    requests.reset()
    assert not requests.requested


def test_sigterm_while_watching_is_a_request_and_the_handler_is_put_back():
    requests = StopRequests()
    before = signal.getsignal(signal.SIGTERM)
    with requests.watching():
        os.kill(os.getpid(), signal.SIGTERM)
    assert requests.reason == "SIGTERM" and requests.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_interrupts_at_once():
    requests = StopRequests()
    with pytest.raises(KeyboardInterrupt), requests.watching():
        os.kill(os.getpid(), signal.SIGINT)
        assert requests.reason == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)
