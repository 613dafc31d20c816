"""Torch threads of the trainer and the in-process student, from the cores available."""

from __future__ import annotations

import os

import pytest

from understudy.student.threads import auto_threads, available_cores, thread_environment


@pytest.mark.parametrize(
    ("requested", "cores", "share", "threads"),
    [
        (0, 2, 1, 1),  # a 2-core box: one core for training, one for the gateway
        (0, 1, 1, 1),
        (0, 16, 1, 15),
        (0, 16, 2, 7),  # the schedule inside the gateway: trainer and student share
        (0, 2, 2, 1),
        (3, 2, 1, 3),  # a setting above 0 is taken as it is
    ],
)
def test_auto_threads_leaves_a_core_and_shares_the_rest(requested, cores, share, threads):
    assert auto_threads(requested, cores=cores, share=share) == threads


def test_the_cores_available_are_the_affinity_capped_by_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "missing") == affinity
    unlimited = tmp_path / "unlimited"
    unlimited.write_text("max 100000\n")
    assert available_cores(unlimited) == affinity
    quota = tmp_path / "quota"
    quota.write_text("50000 100000\n")  # half a core: still one
    assert available_cores(quota) == 1


def test_a_child_process_gets_the_thread_count_of_its_math_libraries():
    assert thread_environment(2) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
