"""`xlp convert fairseq`: a fairseq-layout checkpoint written from a random XLM-R converts back exactly."""

import argparse
import csv

import pytest
import sentencepiece
import torch
from conftest import SHARED, run_xlp

# The fairseq names of XLMRobertaForMaskedLM's weights, written out by hand (fairseq >= 0.10 layout).
LAYER_NAMES = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
               "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
               "attention.output.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
               "output.dense": "fc2", "output.LayerNorm": "final_layer_norm"}


def _fairseq_state(model) -> dict:
    sd = model.state_dict()
    out = {"encoder.sentence_encoder.embed_tokens.weight": sd["roberta.embeddings.word_embeddings.weight"],
           "encoder.sentence_encoder.embed_positions.weight": sd["roberta.embeddings.position_embeddings.weight"],
           "encoder.sentence_encoder.layernorm_embedding.weight": sd["roberta.embeddings.LayerNorm.weight"],
           "encoder.sentence_encoder.layernorm_embedding.bias": sd["roberta.embeddings.LayerNorm.bias"],
           "encoder.sentence_encoder.version": torch.tensor([2.0]),
           "encoder.lm_head.dense.weight": sd["lm_head.dense.weight"],
           "encoder.lm_head.dense.bias": sd["lm_head.dense.bias"],
           "encoder.lm_head.layer_norm.weight": sd["lm_head.layer_norm.weight"],
           "encoder.lm_head.layer_norm.bias": sd["lm_head.layer_norm.bias"],
           "encoder.lm_head.weight": sd["roberta.embeddings.word_embeddings.weight"],
           "encoder.lm_head.bias": sd["lm_head.bias"]}
    for i in range(model.config.num_hidden_layers):
        for hf, fs in LAYER_NAMES.items():
            for p in ("weight", "bias"):
                out[f"encoder.sentence_encoder.layers.{i}.{fs}.{p}"] = sd[f"roberta.encoder.layer.{i}.{hf}.{p}"]
    return out


@pytest.fixture(scope="module")
def fairseq_dir(tmp_path_factory):
    """model.pt + dict.txt + sentencepiece.bpe.model, as the paper's replica checkpoints are published."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    d = tmp_path_factory.mktemp("fairseq")
    with open(SHARED / "udhr" / "udhr.tsv", encoding="utf-8") as f:
        text = [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    (d / "corpus.txt").write_text("\n".join(text), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"), model_prefix=str(d / "sentencepiece.bpe"), vocab_size=1500,
        model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(d / "sentencepiece.bpe.model"))
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    (d / "dict.txt").write_text("".join(f"{p} {1000 - i}\n" for i, p in enumerate(pieces)), encoding="utf-8")
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(pieces) + 5, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=96, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                              layer_norm_eps=1e-5)  # fairseq LayerNorm
    model = XLMRobertaForMaskedLM(config).eval()
    with torch.no_grad():  # fairseq has no token types: the converter writes zeros there
        model.roberta.embeddings.token_type_embeddings.weight.zero_()
    args = argparse.Namespace(encoder_attention_heads=4, activation_fn="gelu", arch="roberta_base")
    torch.save({"args": args, "model": _fairseq_state(model), "optimizer_history": [{"num_updates": 1500}]},
               d / "model.pt")
    return d, model, sp


def test_converted_model_matches_the_original(fairseq_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    src, original, sp = fairseq_dir
    r = run_xlp("convert", "fairseq", str(src), str(tmp_path / "step_1500"))
    assert r.returncode == 0, r.stderr
    converted = AutoModelForMaskedLM.from_pretrained(tmp_path / "step_1500").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "step_1500")
    sentence = "Everyone has the right to life, liberty and security of person."
    enc = tok([sentence, "All human beings are born free."], return_tensors="pt", padding=True)
    assert enc["input_ids"][0, 1:-1].tolist() == [i + 1 for i in sp.encode(sentence)]  # fairseq ids
    with torch.no_grad():
        a = original(**enc, output_hidden_states=True)
        b = converted(**enc, output_hidden_states=True)
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(ha, hb, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
    from xlp.models.series import step_of
    assert step_of(tmp_path / "step_1500") == 1500
    assert (tmp_path / "step_1500" / "model.safetensors").is_file()


def test_unmappable_keys_and_pickled_objects_are_refused(fairseq_dir, tmp_path):
    src, _, _ = fairseq_dir
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(src / "model.pt", weights_only=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("dict.txt", "sentencepiece.bpe.model"):
        (bad / f).write_bytes((src / f).read_bytes())
    ckpt["model"]["encoder.sentence_encoder.layer_norm.weight"] = torch.ones(48)  # a pre-LN model's final norm
    torch.save(ckpt, bad / "model.pt")
    r = run_xlp("convert", "fairseq", str(bad), str(tmp_path / "out"))
    assert r.returncode == 1 and "encoder.sentence_encoder.layer_norm.weight" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()

    del ckpt["model"]["encoder.sentence_encoder.layer_norm.weight"]
    ckpt["extra"] = torch.optim.SGD  # any class that unpickling would import
    torch.save(ckpt, bad / "model.pt")
    r = run_xlp("convert", "fairseq", str(bad), str(tmp_path / "out"))
    assert r.returncode == 1 and "torch.optim.sgd.SGD" in r.stderr and "--allow-pickle" in r.stderr

    del ckpt["extra"]
    torch.save(ckpt, bad / "model.pt")
    (bad / "dict.txt").write_text("".join(reversed((src / "dict.txt").read_text().splitlines(True))))
    r = run_xlp("convert", "fairseq", str(bad), str(tmp_path / "out"))
    assert r.returncode == 1 and "dict.txt:1:" in r.stderr and not (tmp_path / "out").exists()
