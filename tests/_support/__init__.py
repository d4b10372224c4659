"""Helpers shared by the test directories (``from tests._support.loop_thread import LoopThread``)."""
