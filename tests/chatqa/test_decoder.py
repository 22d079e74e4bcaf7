from __future__ import annotations

import time

import pytest

import chatqa.decoder as decoder_module
from chatqa.decoder import (
    DECODER_FOLDER,
    ComposeEvent,
    DecoderConfig,
    DecoderUnavailable,
    GenerativeDecoder,
    abstention_answer,
    evidence_sentence,
    keeps_span,
    template_answer,
)

QUESTION = "When was the Eiffel Tower built?"
SPAN = "1887 to 1889"
EVIDENCE = "The Eiffel Tower was built from 1887 to 1889 on the Champ de Mars in Paris."
PASSAGE = (
    "Gustave Eiffel's company designed it. " + EVIDENCE + " It is 330 m tall. Dr. Smith visited it in 1925."
)


# -- the span-keeping rule, without a model --------------------------------------------------------------------
def test_keeps_span_accepts_a_reply_containing_the_span_in_any_case_and_spacing():
    assert keeps_span("The Eiffel Tower was built from 1887   TO 1889.", SPAN, EVIDENCE, QUESTION)
    assert keeps_span("It was built from 1887 to 1889, in Paris.", SPAN, EVIDENCE, QUESTION)


def test_keeps_span_accepts_the_spans_numbers_and_names_in_other_words():
    assert keeps_span("It was built between 1887 and 1889.", SPAN, EVIDENCE, QUESTION)
    assert keeps_span("It stands on the Champ de Mars.", "the Champ de Mars in Paris", EVIDENCE, QUESTION) is False
    assert keeps_span("It stands in Paris, on the Champ de Mars.", "the Champ de Mars in Paris", EVIDENCE, QUESTION)


def test_keeps_span_rejects_a_reply_that_drops_the_span():
    assert not keeps_span("The Eiffel Tower was built in Paris.", SPAN, EVIDENCE, QUESTION)
    assert not keeps_span("It was finished in 1889.", SPAN, EVIDENCE, QUESTION)  # 1887 dropped
    assert not keeps_span("It is made of iron.", "wrought iron", "It is made of wrought iron.", "What is it made of?")
    assert not keeps_span("   ", SPAN, EVIDENCE, QUESTION)


def test_keeps_span_rejects_a_reply_adding_a_year_or_name_not_in_evidence_or_question():
    assert not keeps_span("It was built from 1887 to 1889 and opened in 1890.", SPAN, EVIDENCE, QUESTION)
    assert not keeps_span("Napoleon built it from 1887 to 1889.", SPAN, EVIDENCE, QUESTION)
    assert not keeps_span("It was built from 1887 to 1889 by Gustave Eiffel.", SPAN, EVIDENCE, QUESTION)
    # a name from the question, or an ordinary word opening a sentence, is not an addition
    assert keeps_span("The tower was built from 1887 to 1889. It is in Paris.", SPAN, EVIDENCE, QUESTION)
    assert keeps_span("Yes, the Eiffel Tower was built from 1887 to 1889.", SPAN, EVIDENCE, "Was it built then?")


def test_evidence_sentence_picks_the_sentence_holding_the_span():
    start = PASSAGE.index(SPAN)
    assert evidence_sentence(PASSAGE, start, start + len(SPAN)) == EVIDENCE
    start = PASSAGE.index("1925")
    assert evidence_sentence(PASSAGE, start, start + 4) == "Dr. Smith visited it in 1925."  # "Dr." is no end
    start = PASSAGE.index("330 m")
    assert evidence_sentence(PASSAGE, start, start + 5) == "It is 330 m tall."
    assert evidence_sentence("no full stop here", 3, 7) == "no full stop here"
    with pytest.raises(ValueError, match="outside the passage"):
        evidence_sentence(PASSAGE, 5, len(PASSAGE) + 1)


def test_template_answer_contains_the_span_and_its_sentence():
    answer = template_answer(QUESTION, SPAN, EVIDENCE)
    assert answer == f"{SPAN}. (from: “{EVIDENCE}”)"
    assert template_answer("Who?", "Gustave Eiffel's company designed it.", "Gustave Eiffel's company designed it.") == (
        "Gustave Eiffel's company designed it."
    )
    long = "Word " * 100 + EVIDENCE + " More" * 100
    answer = template_answer(QUESTION, SPAN, long)
    assert SPAN in answer and answer.count("…") == 2 and len(answer) < 300


def test_abstention_answer_names_up_to_three_closest_documents():
    text = abstention_answer(["a.pdf", "b.txt", "a.pdf", "c.md", "d.docx"])
    assert text.startswith("I couldn't find that in your documents.")
    assert "“a.pdf”, “b.txt” and “c.md”" in text and "d.docx" not in text
    assert abstention_answer([]) == "I couldn't find that in your documents."


def test_config_is_validated_and_nothing_loads_at_construction(tmp_path):
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecoderConfig(max_new_tokens=0)
    decoder = GenerativeDecoder(tmp_path)
    assert decoder.folder == tmp_path / DECODER_FOLDER and "loaded=False" in repr(decoder)
    assert not (tmp_path / DECODER_FOLDER).exists()


def test_a_custom_folder_without_a_model_is_reported(tmp_path):
    with pytest.raises(DecoderUnavailable, match="no decoder model"):
        GenerativeDecoder(tmp_path, model_folder=tmp_path / "nothing").warm_up()


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(decoder_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DecoderUnavailable, match="make setup"):
        decoder_module.find_smollm2_gguf()



def test_prompt_holds_evidence_span_question_and_the_last_two_turns_cut_short(tmp_path):
    class RecordingTokenizer:
        def apply_chat_template(self, messages, **kwargs):
            self.messages = messages
            return {"input_ids": [1, 2, 3]}

    decoder = GenerativeDecoder(tmp_path)
    decoder._model, decoder._tokenizer = object(), RecordingTokenizer()  # as if warmed up
    history = [("first?", "one"), ("second?", "two " * 100), ("third?", "three")]
    assert decoder.prompt_ids(QUESTION, SPAN, EVIDENCE, history) == [1, 2, 3]
    system, user = decoder._tokenizer.messages
    assert system["role"] == "system" and "only the evidence" in system["content"]
    text = user["content"]
    assert "first?" not in text and "second?" in text and "third?" in text and len(text) < 700
    assert text.endswith(f"Evidence: {EVIDENCE}\nAnswer to include: {SPAN}\nQuestion: {QUESTION}")

# -- compose with a fake model ---------------------------------------------------------------------------------
class FakeDecoder(GenerativeDecoder):
    def __init__(self, draft: list[str]):
        super().__init__("unused")
        self.draft = draft
        self.pulled = 0

    def stream(self, question, span_text, evidence, history=()):
        for piece in self.draft:
            self.pulled += 1
            yield piece


def _events(decoder: GenerativeDecoder) -> list[ComposeEvent]:
    return list(decoder.compose(QUESTION, SPAN, EVIDENCE))


def test_compose_keeps_a_draft_that_keeps_the_span():
    draft = ["It", " was", " built", " from", " 1887", " to", " 1889", "."]
    events = _events(FakeDecoder(draft))
    assert [e.kind for e in events] == ["token"] * len(draft) + ["final"]
    assert "".join(e.text for e in events[:-1]) == "It was built from 1887 to 1889."
    assert events[-1] == ComposeEvent("final", "It was built from 1887 to 1889.", kept=True)


def test_compose_replaces_a_draft_that_drops_the_span_by_the_template():
    events = _events(FakeDecoder(["The", " tower", " is", " in", " Paris", "."]))
    assert [e.kind for e in events[:-1]] == ["token"] * 6  # streamed before the verdict
    final = events[-1]
    assert final.kind == "final" and final.kept is False and final.reason
    assert final.text == template_answer(QUESTION, SPAN, EVIDENCE) and SPAN in final.text


def test_compose_stops_drafting_once_the_draft_adds_a_fact():
    decoder = FakeDecoder(["It", " opened", " in", " 1925", " and", " was", " built", " from", " 1887", " to", " 1889"])
    events = _events(decoder)
    assert events[-1].kept is False and "1925" in events[-1].reason
    assert decoder.pulled == 5  # stopped as soon as "1925" was a finished word
    assert events[-1].text == template_answer(QUESTION, SPAN, EVIDENCE)


def test_compose_replaces_an_empty_draft():
    events = _events(FakeDecoder([]))
    assert events == [ComposeEvent("final", template_answer(QUESTION, SPAN, EVIDENCE), False, "the draft is empty")]


def test_a_model_marked_as_gguf_quantized_saves_once_the_quantizer_is_cleared(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import GgufConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config)
    # what from_pretrained(..., gguf_file=...) leaves on a model without dequantize=True
    model.hf_quantizer = type("Quantizer", (), {"is_serializable": lambda self: False,
                                                "quantization_config": GgufConfig()})()
    model.quantization_method, model.is_quantized = "gguf", True
    model.config.quantization_config, model.config._is_quantized = GgufConfig(), True
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    decoder_module._clear_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in (tmp_path / "saved" / "config.json").read_text()
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


# -- the real model --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_decoder(tmp_path_factory):
    """One conversion of the packaged GGUF into a temporary models dir, shared by the slow tests."""
    torch = pytest.importorskip("torch")
    try:
        decoder_module.find_smollm2_gguf()
    except DecoderUnavailable as e:
        pytest.skip(str(e))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 cores: a second thread contends with whatever else runs (10x slower here)
    models_dir = tmp_path_factory.mktemp("models")
    decoder = GenerativeDecoder(models_dir, config=DecoderConfig(max_new_tokens=40))
    t0 = time.perf_counter()
    decoder.warm_up()
    print(f"\ndecoder conversion + load: {time.perf_counter() - t0:.1f} s")
    yield decoder
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_conversion_writes_a_folder_that_loads_without_converting_again(real_decoder, monkeypatch):
    folder = real_decoder.folder
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(decoder_module, "convert_gguf", no_conversion)
    again = GenerativeDecoder(real_decoder.models_dir, config=real_decoder.config)
    t0 = time.perf_counter()
    again.warm_up()
    print(f"\nloading the converted decoder: {time.perf_counter() - t0:.2f} s")
    assert again.prompt_ids("Q?", "a", "b") == real_decoder.prompt_ids("Q?", "a", "b")


@pytest.mark.slow
def test_compose_on_a_real_factoid_keeps_the_span(real_decoder):
    events = list(real_decoder.compose(QUESTION, SPAN, EVIDENCE))
    tokens, final = events[:-1], events[-1]
    assert len(tokens) >= 2 and all(e.kind == "token" for e in tokens)
    assert final.kind == "final" and keeps_span(final.text, SPAN, EVIDENCE, QUESTION)
    if final.kept:
        assert final.text == "".join(e.text for e in tokens).strip()
    print(f"\ndraft: {''.join(e.text for e in tokens)!r} → final ({'kept' if final.kept else final.reason}): "
          f"{final.text!r}")


@pytest.mark.slow
def test_first_token_latency_and_speed_on_a_250_token_prompt(real_decoder):
    evidence = " ".join([PASSAGE] * 3)
    prompt = real_decoder.prompt_ids("Describe the Eiffel Tower and its history in detail.", SPAN, evidence)
    assert 200 <= len(prompt) <= 300
    t0 = time.perf_counter()
    stamps = [time.perf_counter() - t0 for _ in real_decoder.generate(prompt)]
    assert stamps, "the model produced no token"
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    print(f"\nprompt {len(prompt)} tokens: first token {stamps[0]:.2f} s, {len(stamps)} tokens, {rate:.1f} tokens/s")

