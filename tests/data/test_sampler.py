"""Batch plans: determinism, budgets, each ordering's defining property, chunking, shares, cursors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from cadence.data.sampler import BatchingOptions, BatchSampler, build_plan, frame_counts

DURATIONS = np.random.default_rng(7).uniform(0.5, 6.0, size=500)
ORDERINGS = ["random", "sorted", "sorted_reverse", "buckets", "laplace:5", "sortagrad"]


def plan_for(ordering: str = "buckets", epoch: int = 0, seed: int = 0, durations=DURATIONS, **options):
    return build_plan(durations, BatchingOptions(ordering=ordering, **{"max_frames": 4000, **options}), seed=seed, epoch=epoch)


def flat_lengths(plan) -> np.ndarray:
    return plan.durations  # segments in plan order, batch after batch


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_a_plan_is_a_function_of_seed_and_epoch(ordering: str) -> None:
    first, again = plan_for(ordering, epoch=3, seed=11), plan_for(ordering, epoch=3, seed=11)
    for name in ("indices", "starts", "durations", "bounds"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    if ordering not in ("sorted", "sorted_reverse"):
        assert not np.array_equal(first.indices, plan_for(ordering, epoch=4, seed=11).indices)
        assert not np.array_equal(first.indices, plan_for(ordering, epoch=3, seed=12).indices)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_every_utterance_once_per_epoch_within_the_budget(ordering: str) -> None:
    plan = plan_for(ordering, max_frames=4000, max_seqs=20)
    assert sorted(plan.indices.tolist()) == list(range(len(DURATIONS)))
    frames = frame_counts(plan.durations, 100)
    for begin, end in zip(plan.bounds[:-1], plan.bounds[1:]):
        assert 1 <= end - begin <= 20
        assert (end - begin) * frames[begin:end].max() <= 4000


def test_a_segment_longer_than_the_budget_forms_a_batch_of_one() -> None:
    plan = plan_for("sorted", durations=np.array([1.0, 9.0, 1.0]), max_frames=300)
    assert [len(batch) for batch in plan.batch_indices()] == [2, 1]


def test_sorted_orderings_are_monotonic_and_random_is_not() -> None:
    assert np.all(np.diff(flat_lengths(plan_for("sorted"))) >= 0)
    assert np.all(np.diff(flat_lengths(plan_for("sorted_reverse"))) <= 0)
    lengths = flat_lengths(plan_for("random"))
    assert np.any(np.diff(lengths) > 0) and np.any(np.diff(lengths) < 0)


def test_laplace_bins_are_sorted_alternately_up_and_down() -> None:
    plan = plan_for("laplace:5")
    bins = np.array_split(flat_lengths(plan), 5)  # the plan keeps the order the bins were packed in
    for number, lengths in enumerate(bins):
        steps = np.diff(lengths)
        assert np.all(steps >= 0) if number % 2 == 0 else np.all(steps <= 0)
    # Each bin is a random draw, not a length range: bins overlap in length.
    assert bins[0].max() > bins[1].min()


def test_buckets_keep_similar_lengths_together_but_shuffle_batches() -> None:
    bucketed, shuffled = plan_for("buckets", num_buckets=50), plan_for("random")
    assert bucketed.padding_fraction(100) < 0.05 < shuffled.padding_fraction(100)
    longest = [batch.max() for batch in np.split(bucketed.durations, bucketed.bounds[1:-1])]
    assert np.any(np.diff(longest) > 0) and np.any(np.diff(longest) < 0)  # batch order is not by length
    # Batch membership changes between epochs, not just batch order.
    members = lambda plan: {frozenset(batch.tolist()) for batch in plan.batch_indices()}
    assert members(bucketed) != members(plan_for("buckets", epoch=1, num_buckets=50))


def test_sortagrad_sorts_the_first_epoch_then_uses_buckets() -> None:
    np.testing.assert_array_equal(plan_for("sortagrad", epoch=0).indices, plan_for("sorted", epoch=0).indices)
    np.testing.assert_array_equal(plan_for("sortagrad", epoch=1).indices, plan_for("buckets", epoch=1).indices)


def test_length_filters_drop_and_count() -> None:
    plan = plan_for(min_duration=1.0, max_duration=5.0)
    kept = DURATIONS[(DURATIONS >= 1.0) & (DURATIONS <= 5.0)]
    assert plan.num_segments == len(kept)
    assert plan.dropped == {
        "shorter_than_min_duration": int((DURATIONS < 1.0).sum()),
        "longer_than_max_duration": int((DURATIONS > 5.0).sum()),
    }


def test_random_chunks_have_the_chunk_size_and_stay_inside_the_utterance() -> None:
    plan = plan_for(chunk_size=1.0)
    assert plan.dropped == {"shorter_than_chunk": int((DURATIONS < 1.0).sum())}
    assert np.all(plan.durations == 1.0)
    assert np.all(plan.starts >= 0) and np.all(plan.starts + 1.0 <= DURATIONS[plan.indices] + 1e-9)
    assert not np.array_equal(np.sort(plan.starts), np.sort(plan_for(chunk_size=1.0, epoch=1).starts))


def test_size_step_chunks_tile_each_utterance() -> None:
    durations = np.array([2.5, 1.0, 0.4])
    plan = plan_for("sorted", durations=durations, chunk_size=1.0, chunk_step=0.5)
    chunks = sorted(zip(plan.indices.tolist(), plan.starts.tolist(), plan.durations.tolist()))
    assert chunks == [
        (0, 0.0, 1.0), (0, 0.5, 1.0), (0, 1.0, 1.0), (0, 1.5, 1.0),  # the last chunk reaches the end
        (1, 0.0, 1.0),
        (2, 0.0, 0.4),
    ]


def test_invalid_options_are_rejected_with_the_key() -> None:
    with pytest.raises(pydantic.ValidationError, match="laplace:N"):
        BatchingOptions(ordering="laplace")
    with pytest.raises(pydantic.ValidationError, match="chunk_step needs chunk_size"):
        BatchingOptions(chunk_step=0.5)
    with pytest.raises(pydantic.ValidationError, match="max_frame"):
        BatchingOptions(max_frame=10)


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_gets_an_equal_share_of_one_global_plan(world_size: int) -> None:
    options = BatchingOptions(max_frames=4000, ordering="buckets")
    whole = build_plan(DURATIONS, options, seed=5, epoch=2)
    shares = [build_plan(DURATIONS, options, seed=5, epoch=2, rank=rank, world_size=world_size) for rank in range(world_size)]
    assert len({len(share) for share in shares}) == 1
    global_batches = [batch.tolist() for batch in whole.batch_indices()]
    wrapped = global_batches + global_batches[: -len(global_batches) % world_size]
    for rank, share in enumerate(shares):
        assert [batch.tolist() for batch in share.batch_indices()] == wrapped[rank::world_size]
    covered = {index for share in shares for index in share.indices.tolist()}
    assert covered == set(range(len(DURATIONS)))


def test_resuming_at_a_cursor_yields_exactly_the_remaining_batches() -> None:
    options = BatchingOptions(max_frames=4000)
    sampler = BatchSampler(DURATIONS, options, seed=3)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(4)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "cursor": 4}

    resumed = BatchSampler(DURATIONS, options, seed=3)
    resumed.load_state_dict(state)
    fresh = BatchSampler(DURATIONS, options, seed=3)
    uninterrupted = [fresh.plan(2).batch(position) for position in range(len(fresh.plan(2)))]
    # Keys carry NaN starts (whole utterances); compare their text, as NaN != NaN.
    assert repr(consumed + list(resumed)) == repr(uninterrupted)
    assert resumed.state_dict() == {"epoch": 3, "cursor": 0}  # a completed pass moves to the next epoch


def test_evaluation_shares_deal_every_batch_exactly_once() -> None:
    options = BatchingOptions(max_frames=4000, ordering="sorted")
    whole = [batch.tolist() for batch in build_plan(DURATIONS, options, seed=0, epoch=0).batch_indices()]
    shares = [build_plan(DURATIONS, options, seed=0, epoch=0, rank=rank, world_size=3, equal_shares=False) for rank in range(3)]
    dealt = [batch.tolist() for share in shares for batch in share.batch_indices()]
    assert sorted(dealt) == sorted(whole)  # no batch twice, none missing
    assert max(len(share) for share in shares) - min(len(share) for share in shares) <= 1


def _sampler_in_a_process_group(rank: int, store_file: str, output_dir: str) -> None:
    import json
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        sampler = BatchSampler(DURATIONS, BatchingOptions(max_frames=4000), seed=9)  # rank and size from the group
        sampler.set_epoch(1)
        batches = [[key[0] for key in batch] for batch in sampler]
        (Path(output_dir) / f"rank{rank}.json").write_text(json.dumps({"rank": sampler.rank, "size": sampler.world_size, "batches": batches}))
    finally:
        dist.destroy_process_group()


def test_ranks_of_a_real_process_group_run_equal_numbers_of_batches(tmp_path) -> None:
    import json
    import torch.multiprocessing as mp

    mp.spawn(_sampler_in_a_process_group, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [(result["rank"], result["size"]) for result in ranks] == [(0, 2), (1, 2)]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"])
    expected = build_plan(DURATIONS, BatchingOptions(max_frames=4000), seed=9, epoch=1, rank=1, world_size=2)
    assert ranks[1]["batches"] == [batch.tolist() for batch in expected.batch_indices()]
    covered = {index for result in ranks for batch in result["batches"] for index in batch}
    assert covered == set(range(len(DURATIONS)))


def test_more_ranks_than_batches_still_get_equal_shares() -> None:
    options = BatchingOptions(max_frames=None, max_seqs=1000)  # one batch for everything
    shares = [build_plan(DURATIONS, options, seed=0, epoch=0, rank=rank, world_size=4) for rank in range(4)]
    assert [len(share) for share in shares] == [1, 1, 1, 1] and shares[3].global_batches == 1
    evaluation = [build_plan(DURATIONS, options, 0, 0, rank, 4, equal_shares=False) for rank in range(4)]
    assert [len(share) for share in evaluation] == [1, 0, 0, 0]  # an evaluation rank may have nothing to do


def test_size_step_chunking_adds_no_chunk_through_float_error() -> None:
    plan = plan_for("sorted", durations=np.array([1.3, 0.0]), chunk_size=1.0, chunk_step=0.1)
    assert plan.starts.round(6).tolist() == [0.0, 0.1, 0.2, 0.3]  # the chunk at 0.3 reaches the end
    assert plan.dropped == {"zero_duration": 1}
