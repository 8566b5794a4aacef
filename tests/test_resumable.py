"""The train loader's position: AudioDataLoader-like loaders are used as they are, anything
else is wrapped in PositionedIterable, which resumes mid-epoch exactly."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from cadence.resumable import PositionedIterable, batches_left, resumable_loader


class OwnPosition:
    def __iter__(self):
        return iter(())

    def batches_left(self):
        return 0

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def shuffled_loader() -> DataLoader:
    return DataLoader(list(range(12)), batch_size=3, shuffle=True)


def test_a_loader_with_its_own_position_is_used_as_it_is_and_anything_else_is_wrapped():
    loader = OwnPosition()
    assert resumable_loader(loader) is loader
    assert isinstance(resumable_loader([1, 2]), PositionedIterable)


class SelfResuming:
    """A stateful loader (like torchdata's StatefulDataLoader): it resumes itself, shuffled by
    its own generator, but cannot say how many batches are left."""

    def __init__(self, seed: int):
        self.order = torch.randperm(6, generator=torch.Generator().manual_seed(seed)).tolist()
        self.position = 0

    def __len__(self):
        return len(self.order)

    def __iter__(self):
        while self.position < len(self.order):
            self.position += 1
            yield self.order[self.position - 1]
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_a_loader_that_resumes_itself_gets_its_state_back_and_is_not_replayed():
    expected = list(resumable_loader(SelfResuming(seed=3)))
    interrupted = resumable_loader(SelfResuming(seed=3))
    batches = iter(interrupted)
    first = [next(batches), next(batches)]
    assert interrupted.batches_left() == 4  # counted by cadence: the loader cannot say
    resumed = resumable_loader(SelfResuming(seed=3))
    resumed.load_state_dict(interrupted.state_dict())
    assert resumed.data.position == 2
    assert first + list(resumed) == expected


def test_the_loader_of_an_earlier_fit_is_kept_for_the_same_data():
    data = [1, 2, 3]
    first = resumable_loader(data)
    assert resumable_loader(data, current=first) is first
    assert resumable_loader([1, 2, 3], current=first) is not first


def test_the_cursor_counts_batches_consumed_and_a_whole_pass_moves_to_the_next_epoch():
    loader = PositionedIterable([1, 2, 3])
    batches = iter(loader)
    assert next(batches) == 1 and loader.cursor == 1 and batches_left(loader) == 2
    assert list(batches) == [2, 3]
    assert (loader.epoch, loader.cursor) == (1, 0)


def test_a_plain_shuffled_dataloader_resumes_mid_epoch_with_the_same_batches():
    torch.manual_seed(7)
    straight = PositionedIterable(shuffled_loader())
    expected = [batch.tolist() for batch in straight]

    torch.manual_seed(7)
    interrupted = PositionedIterable(shuffled_loader())
    batches = iter(interrupted)
    first = [next(batches).tolist() for _ in range(2)]
    saved = interrupted.state_dict()
    torch.manual_seed(12345)  # the resumed process's random state is elsewhere
    resumed = PositionedIterable(shuffled_loader())
    resumed.load_state_dict(saved)
    rest = [batch.tolist() for batch in resumed]
    assert first + rest == expected


def test_set_epoch_and_state_reach_the_wrapped_object():
    class EpochAware(list):
        epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def state_dict(self):
            return {"epochs": list(self.epochs)}

    loader = PositionedIterable(EpochAware([1, 2]))
    loader.set_epoch(3)
    assert loader.epoch == 3 and loader.state_dict()["data"] == {"epochs": [3]}


def test_an_iterable_without_length_has_an_unknown_number_of_batches_left():
    loader = PositionedIterable(iter([1, 2]))
    assert batches_left(loader) is None
