"""segcore's contract tests (segcore.testing) on every component this plugin registers: declared shapes at odd
sizes, gradients, channels_last, bf16, the safetensors round trip; torch.compile and torch.export with -m slow."""

from segcore.testing import contract_tests

test_components_keep_their_contracts = contract_tests(distribution="segcore-plugin-frm")
