"""The test kit, apart from the product: synthetic signers and records
(`synth`) and the gossip simulator over an in-memory network (`sim`). Tests,
benchmarks, the demo and scripts/simulate.py import it; no module of the node
does (tests/test_typing_and_lint.py checks that)."""
