import pytest
from transformers import CLIPTokenizer

from erasectl.assets import embedded_judge_dir, embedded_pipeline_dir
from erasectl.world.tokenizer import write_tokenizer
from erasectl.world.vocabulary import WORLD_WORDS


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return CLIPTokenizer.from_pretrained(write_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize("word", WORLD_WORDS)
def test_every_world_word_is_one_token(tokenizer, word):
    ids = tokenizer(word).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 3, tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.convert_ids_to_tokens(ids[1]) == word + "</w>"


def test_other_words_fall_back_to_letters_not_to_world_words(tokenizer):
    tokens = tokenizer.tokenize("grumpy cat")
    assert tokens == ["g", "r", "u", "m", "p", "y</w>", "c", "a", "t</w>"]


def test_model_max_length_and_padding(tokenizer):
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a red circle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == tokenizer.pad_token_id


@pytest.mark.parametrize("folder", [embedded_pipeline_dir() / "tokenizer", embedded_judge_dir()])
def test_shipped_tokenizers_load_from_vocab_and_merges(folder, tmp_path):
    # Only the BPE files and the config: what an old transformers' slow tokenizer reads.
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert [tokenizer.convert_ids_to_tokens(i) for i in tokenizer("a striped hoop").input_ids[1:-1]] == [
        "a</w>",
        "striped</w>",
        "hoop</w>",
    ]
