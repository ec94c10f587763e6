"""Self-generated forget data: one reveal round of Reveal-and-Release (Xie et al., arXiv 2509.14624).

Per pull, a bandit picks an instruction (arm) from the pool using the arms' context vectors, the model
writes K sampled completions of it, the scorer rates each in [0, 1], and the bandit is paid the mean
`reveal_reward(score, novelty)` over the K samples (novelty: word n-grams not yet seen in this round's
generations). The round's generations become forget data after a score threshold and n-gram
de-duplication (`forget_records`), each a `QARecord(question=instruction, answer=generation)` whose tags
carry its provenance (instruction, arm, round, score, ...).

Everything model-specific is in `sample_completions`; the rest takes plain Python values and is tested
without a model.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from ..data.collate import PromptFormat, encode_prompt
from ..data.records import QARecord
from .instructions import dedupe
from .novelty import NgramNovelty, reveal_reward


@dataclass
class RevealSample:
    """One generation with its provenance and ratings (a row of `reveal.jsonl`)."""

    round: int
    pull: int
    arm: int
    instruction: str
    sample: int
    text: str
    mean_logprob: float
    score: float
    novelty: float
    reward: float

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sample_completions(model, tokenizer, instruction: str, k: int, fmt: PromptFormat | None = None,
                       temperature: float = 1.0, top_p: float = 0.95, max_new_tokens: int = 64
                       ) -> list[tuple[str, float]]:
    """K sampled completions of one instruction, each with its mean per-token log-probability under the
    model's own (un-tempered) distribution, EOS included when it was generated.

    The prompt is built like every training/eval prompt (`data.collate.encode_prompt`: the chat template
    when the tokenizer has one, else the plain `Question: … Answer:` template), so the (instruction,
    generation) pairs train in exactly the format they were generated in.
    """
    if k < 1 or max_new_tokens < 1:
        raise ValueError(f"k={k}, max_new_tokens={max_new_tokens}: both must be >= 1")
    fmt = fmt or PromptFormat()
    device = next(model.parameters()).device
    ids = torch.tensor([encode_prompt(tokenizer, instruction, fmt)], device=device).repeat(k, 1)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
                             use_cache=True, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True, output_logits=True)
    finally:
        model.train(was_training)
    new = out.sequences[:, ids.shape[1]:]                                   # [k, T]
    logits = torch.stack(out.logits, dim=1).float()                        # [k, T, V] raw (before temperature)
    lps = torch.log_softmax(logits, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [k, T]
    is_eos = new == tokenizer.eos_token_id
    # a token counts up to and including the first EOS (rows that finished early are padded after it)
    before_eos = (is_eos.long().cumsum(1) - is_eos.long()) == 0
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    result = []
    for i, text in enumerate(texts):
        n = int(before_eos[i].sum())
        mean_lp = float(lps[i, :n].mean()) if n else 0.0
        result.append((text.strip(), min(mean_lp, 0.0)))
    return result


def score_texts(scorer: Callable, texts: Sequence[str], mean_logprobs: Sequence[float] | None = None,
                instructions: Sequence[str] | None = None) -> list[float]:
    """`scorer(texts)`, passing `mean_logprobs` (the entity scorer's confidence) and `instructions` (the
    entity-contrast scorer's prompts) to scorers whose signature takes them."""
    texts = list(texts)
    if not texts:
        return []
    try:
        params = inspect.signature(scorer).parameters
    except (TypeError, ValueError):
        params = {}
    context = {name: list(values) for name, values in (("mean_logprobs", mean_logprobs),
                                                       ("instructions", instructions))
               if values is not None and name in params}
    scores = scorer(texts, **context)
    if len(scores) != len(texts):
        raise ValueError(f"scorer {getattr(scorer, 'name', scorer)!r} returned {len(scores)} scores for "
                         f"{len(texts)} texts")
    return [float(min(max(s, 0.0), 1.0)) for s in scores]


@dataclass(frozen=True)
class Pulls:
    """How one round pulls: `n` pulls, reward = `reveal_reward(score, novelty, novelty_weight)` with word
    `novelty_n`-grams, at most `max_per_arm` pulls of one arm (0: no cap); `round_idx` labels the samples."""

    n: int
    round_idx: int = 0
    novelty_n: int = 3
    novelty_weight: float = 1.0
    max_per_arm: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"pulls={self.n} must be >= 1")
        if self.max_per_arm < 0:
            raise ValueError(f"max_pulls_per_arm={self.max_per_arm} must be >= 0")


def reveal_round(generate: Callable[[str], list[tuple[str, float]]], instructions: Sequence[str], contexts,
                 policy, scorer: Callable, pulls: Pulls, novelty: NgramNovelty | None = None,
                 on_pull: Callable[[list[RevealSample]], None] | None = None) -> list[RevealSample]:
    """`pulls.n` bandit pulls; returns every generation with its score, novelty and reward.

    `generate(instruction) -> [(text, mean_logprob)] * K` (e.g. `sample_completions` bound to a model);
    `contexts` [N, d] are the arms' context vectors; `policy` any `BanditPolicy`. The reward of a pull is
    the mean over its K samples of `reveal_reward(score, novelty)`, novelty measured against the
    generations of earlier pulls (of this round, or of every round when the caller passes one `novelty`
    tracker across rounds); samples of one pull do not count against each other.
    `pulls.max_per_arm` > 0 takes an arm out of this round's choice once it was pulled that often: the
    forget set then comes from several instructions even when one arm's reward dominates (0: no cap).
    """
    if len(instructions) != len(contexts):
        raise ValueError(f"{len(instructions)} instructions but {len(contexts)} context rows")
    max_pulls_per_arm, novelty_weight, round_idx = pulls.max_per_arm, pulls.novelty_weight, pulls.round_idx
    novelty = novelty if novelty is not None else NgramNovelty(n=pulls.novelty_n)
    counts = [0] * len(instructions)
    out: list[RevealSample] = []
    for pull in range(pulls.n):
        allowed = [not max_pulls_per_arm or c < max_pulls_per_arm for c in counts]
        arm = policy.select(contexts, allowed=allowed if any(allowed) else None)  # all used up: cap lifted
        counts[arm] += 1
        instruction = instructions[arm]
        gens = generate(instruction)
        texts = [t for t, _ in gens]
        scores = score_texts(scorer, texts, [lp for _, lp in gens], [instruction] * len(texts))
        novs = novelty(texts)
        rewards = [reveal_reward(s, n, novelty_weight) for s, n in zip(scores, novs)]
        policy.update(contexts[arm], sum(rewards) / len(rewards), arm=arm)
        for t in texts:
            novelty.add(t)
        batch = [RevealSample(round_idx, pull, arm, instruction, j, t, lp, s, n, r)
                 for j, ((t, lp), s, n, r) in enumerate(zip(gens, scores, novs, rewards))]
        out.extend(batch)
        if on_pull is not None:
            on_pull(batch)
    return out


def forget_records(samples: Sequence[RevealSample], score_threshold: float = 0.3, dedupe_threshold: float = 0.7,
                   dedupe_n: int = 2, target: str = "") -> list[QARecord]:
    """Generations scoring >= `score_threshold`, best first, without near-duplicates (word n-gram Jaccard
    >= `dedupe_threshold`, `instructions.dedupe`), as QA records (question = the instruction, answer = the
    generation) tagged with their provenance."""
    kept = sorted((s for s in samples if s.score >= score_threshold and s.text.strip()),
                  key=lambda s: (-s.score, s.pull, s.sample))
    texts = dedupe([s.text for s in kept], threshold=dedupe_threshold, n=dedupe_n)
    wanted = {t: None for t in texts}
    out = []
    for s in kept:
        t = s.text.strip()
        if t in wanted and wanted[t] is None:
            wanted[t] = s
            out.append(QARecord(question=s.instruction, answer=t, tags={
                "source": "reveal", "target": target, "round": s.round, "arm": s.arm, "instruction": s.instruction,
                "pull": s.pull, "sample": s.sample, "score": s.score, "novelty": s.novelty, "reward": s.reward,
                "mean_logprob": s.mean_logprob}))
    return out
