"""Helpers of the task tests: a word tokenizer's transcripts and batches of random features."""

import torch

from cadence.data.dataset import Batch

WORDS = ["one two three", "three", "two two one", "one"]


def text_batch(tokenizer, texts, frames=(60, 40, 56, 30), bins=16, seed=0):
    """Random features standing in for audio, with real token targets."""
    generator = torch.Generator().manual_seed(seed)
    targets = [tokenizer.encode(text) for text in texts]
    padded = torch.zeros(len(texts), max(map(len, targets)), dtype=torch.long)
    for row, tokens in enumerate(targets):
        padded[row, : len(tokens)] = torch.tensor(tokens)
    return Batch(
        inputs=torch.randn(len(texts), bins, max(frames), generator=generator),
        input_lengths=torch.tensor(frames),
        targets=padded,
        target_lengths=torch.tensor([len(tokens) for tokens in targets]),
        ids=[f"utt{index}" for index in range(len(texts))],
        speakers=["s"] * len(texts),
    )
