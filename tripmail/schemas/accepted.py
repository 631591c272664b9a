from pydantic import BaseModel


class Accepted(BaseModel):
    """What the api knows the moment it has enqueued a trigger."""

    id: str
    status: str = "queued"
    duplicate: bool = False
    matching_automations: int = 0
