"""The web UI with vision-language models: the Chat tab's image upload (its reply is the engine's for the same
image and prompt; only uploads are read, from a folder of the session's own) and the Train tab's vision
options (offered for such models only, labelled in every language, carried into the config)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import LF_DATA
from tunesmith.errors import TunesmithError
from tunesmith.infer.settings import GenerationSettings
from vision_models import vl_dir  # noqa: F401 (a fixture)

IMAGES = [LF_DATA / "mllm_demo_data" / name for name in ("1.jpg", "2.jpg")]
# Sampled with a fixed seed: the tiny random model answers greedily with the same newlines whatever it sees.
SETTINGS = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=0)
VISION_FIELDS = ("method.vision.train_tower", "method.vision.train_projector")


@pytest.fixture
def uploaded(tmp_path, monkeypatch):
    """Gradio's upload folder in tmp_path, holding copies of the demo images as a browser upload leaves them."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return [str(shutil.copy(image, folder / f"upload-{index}.jpg")) for index, image in enumerate(IMAGES)]


@pytest.fixture(scope="module")
def vl_chat(vl_dir):
    """A chat session with the tiny Qwen2-VL loaded (once for the module's chats)."""
    from tunesmith.webui.chat import ChatSession

    chat = ChatSession()
    chat.load(str(vl_dir), None, "auto")
    return chat


@pytest.fixture
def ctx(tmp_path):
    from tunesmith.webui.context import WebuiContext

    return WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path.parent])  # the session's temp folders


@pytest.fixture
def vl_ctx(ctx, vl_chat):
    ctx.chat = vl_chat
    return ctx


def _respond(ctx, text, uploads, history, kept):
    """The Chat tab's send handler run to its end: (message box, upload box, history, session images)."""
    from tunesmith.webui.chat_tab import SETTINGS_PREFIX, _responder
    from tunesmith.webui.schema_fields import dataclass_fields, to_form_value

    specs = dataclass_fields(GenerationSettings, SETTINGS_PREFIX)
    values = [to_form_value(spec, getattr(SETTINGS, spec.name)) for spec in specs]
    return list(_responder(ctx, specs)(text, uploads, history, kept, "", *values))[-1]


def test_an_uploaded_image_goes_with_the_next_message_as_chat_image_sends_it(vl_ctx, uploaded):
    ctx = vl_ctx
    engine = ctx.chat.engine
    message, box, history, kept = _respond(ctx, "What is in the picture?", uploaded[1:], [], None)
    first = [{"role": "user", "content": "<image>What is in the picture?"}]
    expected = engine.generate(first, SETTINGS, images=[str(IMAGES[1])])
    assert (message, box, history[-1]["content"]) == ("", None, expected)
    assert expected != engine.generate(first, SETTINGS, images=[str(IMAGES[0])])  # the image reaches the model
    (copy,) = kept.turns[0]
    assert Path(copy).parent == kept.folder and Path(copy).read_bytes() == IMAGES[1].read_bytes()
    assert history[0]["content"] == [{"path": copy}, "What is in the picture?"]  # shown in the conversation

    # The next message, no upload: the earlier image stays in the conversation, where its message put it.
    _, _, history, kept = _respond(ctx, "And now?", None, history, kept)
    second = first + [{"role": "assistant", "content": expected}, {"role": "user", "content": "And now?"}]
    assert history[-1]["content"] == engine.generate(second, SETTINGS, images=[str(IMAGES[1])])
    assert kept.turns == [[copy], []]

    from tunesmith.webui.chat_tab import forget

    assert forget(kept) == ([], kept) and kept.turns == [] and not Path(copy).exists()
    kept.close()
    assert not kept.folder.exists()


def test_only_files_uploaded_through_the_page_are_read(vl_ctx, uploaded):
    from tunesmith.webui.chat_images import ChatImages, upload_folder

    kept = ChatImages()
    with pytest.raises(TunesmithError, match="not a file uploaded through this page"):
        kept.keep([str(IMAGES[0])], upload_folder())  # a server path, however real
    with pytest.raises(TunesmithError, match="not a file uploaded through this page"):
        kept.keep([str(Path(uploaded[0]).parent / ".." / "elsewhere.jpg")], upload_folder())
    (Path(uploaded[0]).parent / "notes.jpg").write_text("not an image")
    with pytest.raises(TunesmithError, match="not a readable image"):
        kept.keep([uploaded[0], str(Path(uploaded[0]).parent / "notes.jpg")], upload_folder())
    assert list(kept.folder.iterdir()) == []  # nothing copied when one of the uploads is refused

    # Through the send handler: a warning, and the conversation, message and uploads as they were.
    before = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert _respond(vl_ctx, "Look", [str(IMAGES[0])], before, kept) == ("Look", [str(IMAGES[0])], before, kept)
    assert kept.turns == []
    kept.close()


def test_typed_placeholders_never_take_an_images_place(vl_ctx, uploaded):
    ctx = vl_ctx
    message, _, history, kept = _respond(ctx, "Is <image> a tag?", uploaded[:1], [], None)
    assert (message, history, kept.turns) == ("Is <image> a tag?", [], [])
    # Without images the same words are plain text, as the engine renders them.
    _, _, history, _ = _respond(ctx, "Is <image> a tag?", None, [], kept)
    expected = ctx.chat.engine.generate([{"role": "user", "content": "Is <image> a tag?"}], SETTINGS)
    assert history[-1]["content"] == expected
    kept.close()


def test_image_upload_is_offered_for_vision_language_models_only(vl_chat, ctx, tiny_model_dir, uploaded):
    assert vl_chat.reads_images
    assert not ctx.chat.reads_images  # nothing loaded
    ctx.chat.load(str(tiny_model_dir), None, "auto")
    assert not ctx.chat.reads_images
    # Should an image reach a text-only model anyway (its upload box is hidden), the message says why not.
    with pytest.warns(UserWarning, match="text-only"):
        message, _, history, kept = _respond(ctx, "Look", uploaded[:1], [], None)
    assert (message, history, kept.turns) == ("Look", [], [])
    kept.close()


def test_the_train_tab_offers_vision_options_for_vision_language_models_only(ctx, vl_dir, tiny_model_dir, tmp_path):
    from tunesmith.webui.train_actions import is_vision_model_path

    assert is_vision_model_path(ctx, str(vl_dir))
    assert not is_vision_model_path(ctx, str(tiny_model_dir))
    assert not is_vision_model_path(ctx, "")
    assert not is_vision_model_path(ctx, "HuggingFaceTB/SmolLM2-135M-Instruct")
    from tunesmith.webui.context import WebuiContext

    narrow = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path])  # vl_dir lies outside
    assert not is_vision_model_path(narrow, str(vl_dir))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_vision_options_chosen_in_the_form_reach_the_config(vl_dir, tmp_path, method):
    import yaml

    from tunesmith.webui import train_actions
    from tunesmith.webui.context import WebuiContext

    ctx = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path.parent, LF_DATA])
    values = {"model.path": str(vl_dir), "data.dataset_dir": str(LF_DATA), "data.datasets": ["mllm_demo"],
              "method.kind": method, "method.vision.train_tower": True, "method.vision.train_projector": False}
    config = train_actions.build_run_config(ctx, values, "vision")
    assert (config.method.vision.train_tower, config.method.vision.train_projector) == (True, False)
    written, _ = train_actions.command_preview(config)
    assert yaml.safe_load(written)["method"]["vision"] == {"train_tower": True, "train_projector": False}


def test_vision_texts_exist_in_every_language():
    from tunesmith.webui.i18n import Texts

    texts = Texts.load()
    for path in VISION_FIELDS:
        assert set(texts.fields[path]) >= set(texts.languages), path
    for key in ("group_vision", "chat_images"):
        assert set(texts.ui[key]) == set(texts.languages), key


def test_the_page_starts_with_the_vision_parts_hidden(ctx):
    pytest.importorskip("gradio")
    from tunesmith.webui.app import build_app
    from tunesmith.webui.forms import field_id

    blocks = {block.elem_id: block for block in build_app(ctx).blocks.values() if block.elem_id}
    assert not blocks["chat-images"].visible and not blocks["group-vision"].visible
    inside, parts = set(), [blocks["group-vision"]]
    while parts:  # every widget inside the panel, however deep its rows and columns nest
        part = parts.pop()
        inside.add(part.elem_id)
        parts += getattr(part, "children", [])
    assert inside - {None, "group-vision"} == {field_id(path) for path in VISION_FIELDS}
