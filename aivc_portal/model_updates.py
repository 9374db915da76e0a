"""The create-or-update write that services share: set only the fields whose value
differs, validate the row as a form would, save only those fields. Services decide which
fields a caller may set; this only writes them."""

from dataclasses import dataclass, field

from django.db import models


@dataclass
class Saved:
    """What a create-or-update did: `created`, or the names of the fields it changed
    (empty: the row already held these values)."""

    instance: models.Model
    created: bool = False
    changed: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        if self.created:
            return "created"
        return "updated" if self.changed else "unchanged"


def model_update(*, instance: models.Model, values: dict) -> list[str]:
    """Writes the values that differ and returns their names. Field validation runs first,
    so a bad value is a ValidationError, never a database error."""
    changed = [name for name, value in values.items() if _differs(instance, name, value)]
    if not changed:
        return []
    for name in changed:
        setattr(instance, name, values[name])
    _validate(instance, checked=changed)
    instance.save(update_fields=changed)
    return changed


def _differs(instance: models.Model, name: str, value: object) -> bool:
    """A related row is compared by id, so comparing never loads it."""
    field = instance._meta.get_field(name)
    if field.is_relation and field.concrete:
        return getattr(instance, field.attname) != (value.pk if value is not None else None)
    return getattr(instance, name) != value


def model_create(*, model: type[models.Model], values: dict) -> models.Model:
    instance = model(**values)
    _validate(instance, checked=[f.name for f in model._meta.concrete_fields])
    instance.save()
    return instance


def _validate(instance: models.Model, *, checked: list[str]) -> None:
    """Field rules (lengths, ranges, choices) and the model's `clean`, in Python, without a
    query: uniqueness, constraints and related rows given as instances are the database's
    and the caller's to enforce (an IntegrityError), so a bulk import stays cheap. Only
    `checked` fields are validated: a row written before a rule existed stays editable as
    long as the caller leaves the old value alone."""
    exclude = [
        field.name
        for field in instance._meta.concrete_fields
        if field.name not in checked or (field.is_relation and getattr(instance, field.attname) is not None)
    ]
    instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
