"""alphora-sandbox Docker backend plugin (being written)."""


def is_docker_available() -> bool:
    return False
