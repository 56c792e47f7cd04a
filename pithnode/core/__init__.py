"""The pure protocol core: formats, canonical JSON, admission, merge, equivocation.

No I/O, no clock, no trio: plain data in, plain data out. Everything a node
must compute byte for byte like every other honest node lives here.
"""

from .bundle import BundleReport, build_bundle, bundle_hash, check_bundle, mirror_hint_entry, resolver_urls
from .canonical import CanonicalError, canonical_bytes, canonical_hash, check_signable, parse_json, sha256_hex
from .events import Admission, admit, identity_of, make_event
from .ids import PithRef, code_from_digest_hex, parse_pith_ref, pith_number_for, short_pith_number, split_pith_number
from .keys import REGISTRY_FINGERPRINT, KeyRing, default_registry_ring, fingerprint_hex
from .merge import MERGE_VERSION, TARGETS, canonical_order_key, merge, merge_document, state_hash
from .record import check_record_json, receipt_problem

__all__ = [
    "Admission", "BundleReport", "CanonicalError", "KeyRing", "MERGE_VERSION", "PithRef", "REGISTRY_FINGERPRINT",
    "TARGETS", "admit", "build_bundle", "bundle_hash", "canonical_bytes", "canonical_hash", "canonical_order_key",
    "check_bundle", "check_record_json", "check_signable", "code_from_digest_hex", "default_registry_ring",
    "fingerprint_hex", "identity_of", "make_event", "merge", "merge_document", "mirror_hint_entry", "parse_json",
    "parse_pith_ref",
    "pith_number_for", "receipt_problem", "resolver_urls", "sha256_hex", "short_pith_number", "split_pith_number",
    "state_hash",
]
