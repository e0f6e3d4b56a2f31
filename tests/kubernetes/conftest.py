from bot.testing.fake_kubernetes.fixtures import fake_k8s  # noqa: F401
