"""resolve_vocabulary: class names given at runtime -> the vocabulary the segmenter uses."""

import pytest
import torch

from clip_seg3d_ros import Vocabulary
from clip_seg3d_ros.runtime.vocabulary_update import clean_class_names, resolve_vocabulary
from clip_seg3d_ros.teacher import SyntheticTeacher, SyntheticTeacherConfig


@pytest.fixture(scope="module")
def teacher():
    return SyntheticTeacher(SyntheticTeacherConfig(embed_dim=32))


@pytest.fixture()
def checkpoint_vocabulary(teacher):
    names = ["road", "car", "vegetation", "truck"]
    return Vocabulary(names, teacher.encode_text(names), seen=[True, True, True, False],
                      prompt_templates=["a photo of a {}."])


class TemplatedEncoder:
    """A text encoder with prompt templates, like OpenClipTeacher."""

    def __init__(self, teacher, templates):
        self.teacher, self.templates, self.embed_dim = teacher, templates, teacher.embed_dim

    def encode_text(self, names):
        return self.teacher.encode_text(names)


def test_empty_names_mean_the_full_vocabulary(checkpoint_vocabulary):
    assert resolve_vocabulary(checkpoint_vocabulary, []) is checkpoint_vocabulary


def test_known_names_are_a_subset_with_the_checkpoints_embeddings(checkpoint_vocabulary):
    vocabulary = resolve_vocabulary(checkpoint_vocabulary, [" truck", "road "])
    assert vocabulary.names == ["truck", "road"] and vocabulary.seen == [False, True]
    torch.testing.assert_close(vocabulary.text_embeddings, checkpoint_vocabulary.text_embeddings[[3, 0]])


def test_new_names_need_a_text_encoder_and_say_which_classes_exist(checkpoint_vocabulary, teacher):
    with pytest.raises(ValueError, match=r"\['person'\] are not in the checkpoint.*'road', 'car', 'vegetation'"):
        resolve_vocabulary(checkpoint_vocabulary, ["car", "person"])
    vocabulary = resolve_vocabulary(checkpoint_vocabulary, ["car", "person"], teacher)
    assert vocabulary.names == ["car", "person"] and vocabulary.seen == [True, False]
    torch.testing.assert_close(vocabulary.text_embeddings[0], checkpoint_vocabulary.text_embeddings[1])
    torch.testing.assert_close(vocabulary.text_embeddings[1], teacher.encode_text(["person"])[0])
    assert vocabulary.prompt_templates == ["a photo of a {}."]


def test_a_text_encoder_must_match_the_checkpoint(checkpoint_vocabulary, teacher):
    other = SyntheticTeacher(SyntheticTeacherConfig(embed_dim=48))
    with pytest.raises(ValueError, match="dimension 48"):
        resolve_vocabulary(checkpoint_vocabulary, ["person"], other)
    with pytest.raises(ValueError, match="prompt templates"):
        resolve_vocabulary(checkpoint_vocabulary, ["person"], TemplatedEncoder(teacher, ["{}"]))
    same = TemplatedEncoder(teacher, ["a photo of a {}."])
    assert resolve_vocabulary(checkpoint_vocabulary, ["person"], same).names == ["person"]


@pytest.mark.parametrize(("names", "message"), [
    (["car", "car"], "unique"),
    (["car", " "], "empty"),
    ("car", "list of strings"),
    (["car", 3], "strings"),
])
def test_bad_name_lists_are_clear_errors(names, message):
    with pytest.raises(ValueError, match=message):
        clean_class_names(names)
