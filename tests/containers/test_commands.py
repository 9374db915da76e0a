import pytest
from django.core.exceptions import ValidationError

from containers.commands import command_arguments, command_problem
from containers.models import Image


def test_it_splits_a_command_into_arguments_as_a_shell_would_without_running_one():
    assert command_arguments("python -c 'print(1); rm -rf /' ; echo $HOME") == [
        "python",
        "-c",
        "print(1); rm -rf /",
        ";",
        "echo",
        "$HOME",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("python -c 'print(1)", "No closing quotation"), ("run\\", "No escaped character"), ("a\x00b", "NUL")],
)
def test_it_names_why_a_command_cannot_be_split(text, problem):
    assert problem in command_problem(text)
    with pytest.raises(ValueError, match=problem):
        command_arguments(text)


@pytest.mark.django_db
def test_an_image_with_an_unsplittable_start_command_does_not_validate():
    image = Image(reference="lab/x:1", start_command="sshd -D 'oops")

    with pytest.raises(ValidationError) as raised:
        image.full_clean()

    assert "start_command" in raised.value.message_dict
