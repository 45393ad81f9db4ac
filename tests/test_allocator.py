"""
Tests for L{hermod_component.allocator}, on the machine's own C library.
"""

from __future__ import annotations

import platform

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from hermod_component import allocator


class TuneAllocatorTests(SynchronousTestCase):
    """
    Tests for L{allocator.tuneAllocator}.
    """

    def setUp(self) -> None:
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("the allocator is tuned on glibc only")

    def test_setsBoth(self) -> None:
        """
        On glibc both thresholds are set, and reported by their environment variables' names.
        """
        self.assertEqual(
            allocator.tuneAllocator({}),
            {
                "MALLOC_MMAP_THRESHOLD_": allocator.MMAP_THRESHOLD,
                "MALLOC_TRIM_THRESHOLD_": allocator.TRIM_THRESHOLD,
            },
        )

    def test_operatorSettingKept(self) -> None:
        """
        A threshold set in the environment is left as the operator set it.
        """
        self.assertEqual(
            allocator.tuneAllocator({"MALLOC_TRIM_THRESHOLD_": "131072"}),
            {"MALLOC_MMAP_THRESHOLD_": allocator.MMAP_THRESHOLD},
        )
        self.assertEqual(
            allocator.tuneAllocator(
                {"MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072"}
            ),
            {},
        )

    def test_notGlibc(self) -> None:
        """
        Without glibc's C{mallopt} nothing is changed.
        """
        self.patch(allocator, "_glibc", lambda: None)
        self.assertEqual(allocator.tuneAllocator({}), {})
