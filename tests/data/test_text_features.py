"""Word-level text features (pipeline/features/text.py). Offline: nothing may reach the model hub."""
import logging
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub read it

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.features.text import ENCODERS, encode_words, load_text_encoder, tokenize_for_finetuning

UTTS = [
    ["i", "really", "liked", "it"],
    [],
    ["unbelievably", "good", "acting", ",", "honestly", "!"],
    ["meh"],
    ["the", "plot", "was", "incomprehensible", "um", "yeah", "so", "bad"],
]


@pytest.fixture(scope="module", params=["tiny-random-bert", "minilm"])
def encoder(request):
    return load_text_encoder(request.param)


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def slow_reference(enc, words):
    """Run the model on one utterance and average each word's token rows by hand."""
    batch = enc.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = enc.model.eval()(**batch).last_hidden_state[0].numpy()
    word_ids = batch.word_ids(0)
    return np.stack([hidden[[t for t, w in enumerate(word_ids) if w == j]].mean(axis=0) for j in range(len(words))])


def test_shapes_and_dtypes(encoder):
    assert encoder.dim == {"tiny-random-bert": 32, "minilm": 384}[encoder.name]
    assert encoder.max_tokens == 512
    x, lens = encode_words(encoder, UTTS, max_words=10, batch_size=2, progress=False)
    assert x.shape == (5, 10, encoder.dim) and x.dtype == np.float32
    assert lens.dtype == np.int64 and lens.tolist() == [4, 0, 6, 1, 8]
    for row, n in zip(x, lens):
        assert np.abs(row[:n]).sum(axis=1).min(initial=1) > 0  # every real word has a vector
        assert not row[n:].any()  # padding and the empty utterance are zeros


def test_mean_pooling_matches_slow_reference(encoder):
    x, lens = encode_words(encoder, UTTS, max_words=10, batch_size=2, progress=False)
    for i, words in enumerate(UTTS):
        if words:
            np.testing.assert_allclose(x[i, : lens[i]], slow_reference(encoder, words), atol=1e-5, rtol=0)


def test_order_preserved_despite_length_sorted_batches(encoder):
    x, _ = encode_words(encoder, UTTS, max_words=10, batch_size=2, progress=False)
    one_by_one = np.concatenate([encode_words(encoder, [u], 10, progress=False)[0] for u in UTTS])
    np.testing.assert_allclose(x, one_by_one, atol=1e-5, rtol=0)
    perm = [3, 0, 4, 2, 1]
    xp, lp = encode_words(encoder, [UTTS[i] for i in perm], max_words=10, batch_size=2, progress=False)
    np.testing.assert_allclose(xp, x[perm], atol=1e-5, rtol=0)
    assert lp.tolist() == [len(UTTS[i]) for i in perm]


def test_truncation_to_max_words(encoder):
    full, _ = encode_words(encoder, UTTS, max_words=10, progress=False)
    x, lens = encode_words(encoder, UTTS, max_words=3, progress=False)
    assert x.shape == (5, 3, encoder.dim) and lens.tolist() == [3, 0, 3, 1, 3]
    # Cutting words changes the context, so compare against encoding the cut utterances.
    cut, _ = encode_words(encoder, [u[:3] for u in UTTS], max_words=3, progress=False)
    np.testing.assert_array_equal(x, cut)
    assert not np.allclose(x, full[:, :3], atol=1e-6)  # 'i really liked' alone has other context


def test_token_limit_gives_zero_words_and_warns(caplog):
    enc = load_text_encoder("tiny-random-bert")
    words = ["unbelievably"] * 4  # 5 tokens each
    with caplog.at_level(logging.WARNING, logger="pipeline.features.text"):
        x, lens = encode_words(enc, [words], max_words=4, max_tokens=8, progress=False)  # [CLS] + 6 + [SEP]
    assert lens.tolist() == [4]
    assert np.abs(x[0, 0]).sum() > 0 and np.abs(x[0, 1]).sum() > 0  # word 1 keeps 1 of its 5 tokens
    assert not x[0, 2:].any()
    assert "2 word(s) got no tokens" in caplog.text


def test_deterministic(encoder):
    a = encode_words(encoder, UTTS, max_words=10, batch_size=2, progress=False)
    b = encode_words(encoder, UTTS, max_words=10, batch_size=2, progress=False)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_tiny_random_bert_weights_are_fixed():
    torch.manual_seed(123)
    before = torch.rand(1)
    w1 = load_text_encoder("tiny-random-bert").model.embeddings.word_embeddings.weight
    w2 = load_text_encoder("tiny-random-bert").model.embeddings.word_embeddings.weight
    assert torch.equal(w1, w2)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # loading left the caller's RNG alone


def test_empty_inputs(minilm):
    x, lens = encode_words(minilm, [[], []], max_words=5, progress=False)
    assert x.shape == (2, 5, 384) and not x.any() and lens.tolist() == [0, 0]
    x, lens = encode_words(minilm, [], max_words=5, progress=False)
    assert x.shape == (0, 5, 384) and lens.shape == (0,)


def test_unknown_encoder_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_text_encoder("roberta-large")
    msg = str(err.value)
    assert "text.encoder" in msg and "roberta-large" in msg
    assert all(name in msg for name in ENCODERS)


def test_bert_base_uncased_missing_offline_gives_hint(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # huggingface_hub read HF_HOME at import; point its cache at the empty dir as well.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ConfigError) as err:
        load_text_encoder("bert-base-uncased")
    msg = str(err.value)
    assert "text.encoder" in msg and "bert-base-uncased" in msg
    assert "download bert-base-uncased" in msg and "text.encoder: minilm" in msg


def test_tokenize_for_finetuning_layout(encoder):
    out = tokenize_for_finetuning(encoder, UTTS, max_tokens=12)
    assert out.shape == (5, 3, 12) and out.dtype == np.int64
    ids, mask, types = out[:, 0], out[:, 1], out[:, 2]
    tok = encoder.tokenizer
    assert (ids[:, 0] == tok.cls_token_id).all()
    n_tokens = [min(len(tok(u, is_split_into_words=True)["input_ids"]), 12) for u in UTTS]
    assert mask.sum(axis=1).tolist() == n_tokens
    assert (ids[mask == 0] == tok.pad_token_id).all() and not types.any()
    assert ids[1, :2].tolist() == [tok.cls_token_id, tok.sep_token_id]  # empty utterance
    assert ids[4, 11] == tok.sep_token_id  # truncated, still ends with [SEP]


def test_minilm_is_a_trained_model(minilm):
    sentences = [
        ["i", "loved", "this", "movie", ",", "it", "was", "wonderful"],
        ["i", "hated", "this", "movie", ",", "it", "was", "awful"],
        ["i", "enjoyed", "this", "film", ",", "it", "was", "great"],
    ]
    x, lens = encode_words(minilm, sentences, max_words=8, progress=False)
    v = x.mean(axis=1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    pos_neg, pos_pos = v[0] @ v[1], v[0] @ v[2]
    assert pos_neg < 0.9  # a positive and a negative review differ
    # Trained weights put the paraphrase nearer than the opposite (random weights do not).
    assert pos_pos > pos_neg + 0.1


def test_word_to_token_map_puts_each_word_row_on_its_sub_word_tokens(minilm):
    """MAG-BERT's word-level rows reach every sub-word token of their word (not by position)."""
    from pipeline.features.text import tokenize_with_word_ids
    from pipeline.models.baselines.mag_bert import rows_to_tokens
    words = [["unbelievably", "good", "cinematography"], ["ok"]]
    ids, word_ids = tokenize_with_word_ids(minilm, words, 16)
    np.testing.assert_array_equal(ids, tokenize_for_finetuning(minilm, words, 16))
    pieces = [len(minilm.tokenizer.tokenize(w)) for w in words[0]]
    assert max(pieces) > 1  # the case the positional fallback gets wrong
    expected = [-1] + [k for k, n in enumerate(pieces) for _ in range(n)] + [-1]
    assert word_ids[0, :len(expected)].tolist() == expected and (word_ids[0, len(expected):] == -1).all()
    rows = torch.arange(1, 4, dtype=torch.float32).view(1, 3, 1).expand(2, 3, 1).clone()  # word k -> k+1
    tok = rows_to_tokens(rows, torch.from_numpy(ids[:, 1]), torch.from_numpy(word_ids))
    assert tok[0, 1:len(expected) - 1, 0].tolist() == [k + 1.0 for k in expected[1:-1]]
    assert tok[0, 0, 0] == 0 and tok[0, len(expected) - 1, 0] == 0  # [CLS], [SEP]
