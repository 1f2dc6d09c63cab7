# cython: language_level=3
"""Packet protection (RFC 9001 §5 adapted to keys from a Noise handshake), key update
(RFC 9001 §6) and AEAD usage limits (RFC 9001 §6.6).

Key schedule (PROTOCOL.md "Packet protection"): each direction starts from a 32-byte
traffic secret (the Noise ``Split()`` key for that direction). From a secret we derive,
with HKDF-Expand-SHA256 and plain ASCII labels as ``info``:

* ``"dquic key"`` → 32-byte AEAD key (ChaCha20-Poly1305 or AES-256-GCM),
* ``"dquic iv"``  → 12-byte IV,
* ``"dquic hp"``  → 32-byte header-protection key (derived once; never updated),
* ``"dquic ku"``  → the next generation's secret (key update).

Nonce = IV XOR the 62-bit packet number left-padded to 12 bytes (RFC 9001 §5.3); the
associated data is the unprotected header through the packet number. Header protection
(RFC 9001 §5.4) samples 16 bytes starting 4 bytes after the packet-number offset and masks
the low 4 (long header) or 5 (short header) bits of byte 0 and the packet-number bytes,
with AES-256-ECB for AES-GCM suites and ChaCha20 (sample = counter || nonce) for
ChaCha20-Poly1305 suites.

``OneRttKeys`` owns both directions because a key update is a connection-wide event: the
peer flipping the key-phase bit makes us update our sending keys too. Hand
``keys.sender`` to the packet builder and ``keys.receiver`` to the packet parser.
``NullProtection`` has the same interface with no cryptography (handshake packets, tests).

Backends. The primitives come from OpenSSL either way; two ways of reaching them exist:

* ``"openssl"``: when the extension was built against libcrypto (``DQUIC_HAVE_OPENSSL``),
  each key holds long-lived ``EVP_CIPHER_CTX`` objects initialised with the key once; per
  packet only the nonce is set and the cipher runs directly on C buffers (no Python call,
  no temporary object besides the output ``bytes``);
* ``"cryptography"``: the ``cryptography`` package's AEAD and ``Cipher`` objects (several
  Python-level calls per packet). Always available; the fallback when the extension was
  built without libcrypto.

Both produce byte-identical packets (tests check this). ``BACKEND`` names the default for
new keys, ``AVAILABLE_BACKENDS`` what this build can use; ``use_backend()`` switches the
default (tests, benchmarks).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
cimport cython
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from dquic._wire cimport pn_decode as _decode_pn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hmac import digest as _hmac_digest

from dquic.errors import ErrorCode, ProtocolError

__all__ = [
    "DecryptionFailed",
    "PacketProtection",
    "NullProtection",
    "OneRttKeys",
    "derive_packet_keys",
    "hmac_sha256",
    "next_secret",
    "decode_packet_number",
    "use_backend",
    "BACKEND",
    "AVAILABLE_BACKENDS",
    "OPENSSL_VERSION",
    "OPENSSL_LIBRARY",
    "TAG_SIZE",
    "SAMPLE_SIZE",
    "KEY_PHASE_BIT",
    "CONFIDENTIALITY_LIMITS",
    "INTEGRITY_LIMITS",
    "DEFAULT_KEY_UPDATE_INTERVAL",
]

# ----------------------------------------------------------------------------- libcrypto
#
# The declarations below resolve to libcrypto when the extension is compiled with
# -DDQUIC_HAVE_OPENSSL (setup.py does so when it finds OpenSSL >= 1.1.1 headers and
# library); otherwise to stubs that always fail, and DQUIC_OPENSSL is 0 so the module
# never calls them. One source file serves both builds; no generated Cython code.
cdef extern from * nogil:
    """
    #if defined(DQUIC_HAVE_OPENSSL)
    #include <openssl/opensslv.h>
    #if OPENSSL_VERSION_NUMBER < 0x10101000L
    #undef DQUIC_HAVE_OPENSSL
    #endif
    #endif

    #if defined(DQUIC_HAVE_OPENSSL)
    #include <openssl/crypto.h>
    #include <openssl/evp.h>
    #define DQUIC_OPENSSL 1
    /* HMAC-SHA256 into out[32] through one context kept for the process (callers hold the
       GIL, so calls never overlap): libcrypto's one-shot HMAC() looks the algorithms up again
       on every call, three quarters of its cost for the short inputs of key schedules.
       Returns 1 on success, 0 when libcrypto could not (the caller then falls back). */
    #if OPENSSL_VERSION_NUMBER >= 0x30000000L
    #include <openssl/core_names.h>
    #include <openssl/params.h>
    static EVP_MAC_CTX *dquic_hmac_ctx = NULL;
    static int dquic_hmac_sha256(const unsigned char *key, size_t klen,
                                 const unsigned char *data, size_t dlen, unsigned char *out) {
        size_t outl = 0;
        if (dquic_hmac_ctx == NULL) {
            OSSL_PARAM params[2];
            EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
            EVP_MAC_CTX *ctx;
            if (mac == NULL) return 0;
            ctx = EVP_MAC_CTX_new(mac);
            EVP_MAC_free(mac);  /* (the context keeps its own reference) */
            if (ctx == NULL) return 0;
            params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
            params[1] = OSSL_PARAM_construct_end();
            if (!EVP_MAC_CTX_set_params(ctx, params)) { EVP_MAC_CTX_free(ctx); return 0; }
            dquic_hmac_ctx = ctx;
        }
        if (!EVP_MAC_init(dquic_hmac_ctx, key, klen, NULL)) return 0;
        if (!EVP_MAC_update(dquic_hmac_ctx, data, dlen)) return 0;
        if (!EVP_MAC_final(dquic_hmac_ctx, out, &outl, 32)) return 0;
        return outl == 32;
    }
    #else
    #include <openssl/hmac.h>
    static HMAC_CTX *dquic_hmac_ctx = NULL;
    static int dquic_hmac_sha256(const unsigned char *key, size_t klen,
                                 const unsigned char *data, size_t dlen, unsigned char *out) {
        unsigned int outl = 0;
        if (klen > 0x7fffffff) return 0;
        if (dquic_hmac_ctx == NULL && (dquic_hmac_ctx = HMAC_CTX_new()) == NULL) return 0;
        if (!HMAC_Init_ex(dquic_hmac_ctx, key, (int)klen, EVP_sha256(), NULL)) return 0;
        if (!HMAC_Update(dquic_hmac_ctx, data, dlen)) return 0;
        if (!HMAC_Final(dquic_hmac_ctx, out, &outl)) return 0;
        return outl == 32;
    }
    #endif
    static const char *dquic_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }
    /* The file of the shared library (or executable) holding the libcrypto this module calls,
       as the dynamic linker resolved it: a wheel's vendored copy, the system's libcrypto, or
       this extension itself when libcrypto is linked statically. Found from an address inside
       libcrypto (the version string it returns: a function's address could be an import stub
       of this module). Writes "" when the platform cannot say. */
    #if defined(_WIN32)
    #include <windows.h>
    static void dquic_openssl_library(char *out, size_t n) {
        HMODULE m = NULL;
        DWORD len = 0;
        out[0] = 0;
        if (GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                               GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                               (LPCSTR)OpenSSL_version(OPENSSL_VERSION), &m))
            len = GetModuleFileNameA(m, out, (DWORD)n);
        if (len == 0 || len >= n) out[0] = 0;
    }
    #else
    #include <dlfcn.h>
    #include <string.h>
    static void dquic_openssl_library(char *out, size_t n) {
        Dl_info info;
        out[0] = 0;
        if (dladdr((const void *)OpenSSL_version(OPENSSL_VERSION), &info) && info.dli_fname && strlen(info.dli_fname) < n)
            strcpy(out, info.dli_fname);
    }
    #endif
    #else
    #include <string.h>
    #define DQUIC_OPENSSL 0
    typedef struct dquic_no_evp_cipher_ctx EVP_CIPHER_CTX;
    typedef struct dquic_no_evp_cipher EVP_CIPHER;
    typedef struct dquic_no_engine ENGINE;
    #define EVP_CTRL_AEAD_SET_IVLEN 0x9
    #define EVP_CTRL_AEAD_GET_TAG 0x10
    #define EVP_CTRL_AEAD_SET_TAG 0x11
    static const char *dquic_openssl_version(void) { return ""; }
    static void dquic_openssl_library(char *out, size_t n) { if (n) out[0] = 0; }
    static EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void) { return NULL; }
    static void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *c) { (void)c; }
    static const EVP_CIPHER *dquic_no_cipher(void) { return NULL; }
    #define EVP_aes_128_gcm dquic_no_cipher
    #define EVP_aes_192_gcm dquic_no_cipher
    #define EVP_aes_256_gcm dquic_no_cipher
    #define EVP_chacha20_poly1305 dquic_no_cipher
    #define EVP_aes_128_ecb dquic_no_cipher
    #define EVP_aes_192_ecb dquic_no_cipher
    #define EVP_aes_256_ecb dquic_no_cipher
    #define EVP_chacha20 dquic_no_cipher
    static int dquic_no_init(EVP_CIPHER_CTX *c, const EVP_CIPHER *t, ENGINE *e,
                             const unsigned char *k, const unsigned char *iv)
    { (void)c; (void)t; (void)e; (void)k; (void)iv; return 0; }
    static int dquic_no_update(EVP_CIPHER_CTX *c, unsigned char *o, int *ol,
                               const unsigned char *i, int il)
    { (void)c; (void)o; (void)ol; (void)i; (void)il; return 0; }
    static int dquic_no_final(EVP_CIPHER_CTX *c, unsigned char *o, int *ol)
    { (void)c; (void)o; (void)ol; return 0; }
    static int EVP_CipherInit_ex(EVP_CIPHER_CTX *c, const EVP_CIPHER *t, ENGINE *e,
                                 const unsigned char *k, const unsigned char *iv, int enc)
    { (void)c; (void)t; (void)e; (void)k; (void)iv; (void)enc; return 0; }
    #define EVP_CipherUpdate dquic_no_update
    #define EVP_EncryptInit_ex dquic_no_init
    #define EVP_DecryptInit_ex dquic_no_init
    #define EVP_EncryptUpdate dquic_no_update
    #define EVP_EncryptFinal_ex dquic_no_final
    #define EVP_DecryptFinal_ex dquic_no_final
    static int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *c, int t, int a, void *p)
    { (void)c; (void)t; (void)a; (void)p; return 0; }
    static int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX *c, int p) { (void)c; (void)p; return 0; }
    static void OPENSSL_cleanse(void *p, size_t n) { volatile unsigned char *v = p; while (n--) *v++ = 0; }
    static int dquic_hmac_sha256(const unsigned char *key, size_t klen,
                                 const unsigned char *data, size_t dlen, unsigned char *out)
    { (void)key; (void)klen; (void)data; (void)dlen; (void)out; return 0; }
    #endif
    """
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    int DQUIC_OPENSSL
    int EVP_CTRL_AEAD_SET_IVLEN
    int EVP_CTRL_AEAD_GET_TAG
    int EVP_CTRL_AEAD_SET_TAG
    const char* dquic_openssl_version()
    void dquic_openssl_library(char* out, size_t n)
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)
    const EVP_CIPHER* EVP_aes_128_gcm()
    const EVP_CIPHER* EVP_aes_192_gcm()
    const EVP_CIPHER* EVP_aes_256_gcm()
    const EVP_CIPHER* EVP_chacha20_poly1305()
    const EVP_CIPHER* EVP_aes_128_ecb()
    const EVP_CIPHER* EVP_aes_192_ecb()
    const EVP_CIPHER* EVP_aes_256_ecb()
    const EVP_CIPHER* EVP_chacha20()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                          const unsigned char* inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_CipherInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                          const unsigned char* key, const unsigned char* iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                         const unsigned char* inp, int inl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX* ctx, int pad)
    void OPENSSL_cleanse(void* ptr, size_t len)
    int dquic_hmac_sha256(const unsigned char* key, size_t klen, const unsigned char* data,
                          size_t dlen, unsigned char* out)


TAG_SIZE = 16
SAMPLE_SIZE = 16
KEY_PHASE_BIT = 0x04
cdef enum:
    _TAG = 16
    _SAMPLE = 16
    _KP = 0x04
cdef int64_t _PN_MAX = (<int64_t>1 << 62) - 1
cdef bytes _ZERO5 = bytes(5)
cdef unsigned char _ZEROS[16]
_ZEROS[:] = [0] * 16

#: RFC 9001 §6.6: packets that may be protected with one key (None: no practical limit).
CONFIDENTIALITY_LIMITS = {"AESGCM": 1 << 23, "ChaChaPoly": None}
#: RFC 9001 §6.6: packets failing authentication tolerated over the connection lifetime.
INTEGRITY_LIMITS = {"AESGCM": 1 << 52, "ChaChaPoly": 1 << 36}
DEFAULT_KEY_UPDATE_INTERVAL = 1 << 23

_AEADS = {"ChaChaPoly": ChaCha20Poly1305, "AESGCM": AESGCM}


class DecryptionFailed(ProtocolError):
    """A packet did not authenticate (or was too short to try). Drop it silently."""

    def __init__(self, message="packet decryption failed"):
        super().__init__(message, ErrorCode.PROTOCOL_VIOLATION)


# ----------------------------------------------------------------------------- backends


cdef bint _probe_cipher(const EVP_CIPHER* cipher):
    """True when libcrypto can set up ``cipher`` (it may be absent, e.g. in a FIPS build)."""
    if cipher == NULL:
        return False
    cdef EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        return False
    cdef unsigned char key[32]
    cdef unsigned char iv[16]
    key[:] = [0] * 32
    iv[:] = [0] * 16
    cdef bint ok = EVP_EncryptInit_ex(ctx, cipher, NULL, key, iv) == 1
    EVP_CIPHER_CTX_free(ctx)
    return ok


cdef bint _openssl_usable():
    if not DQUIC_OPENSSL:
        return False
    return (_probe_cipher(EVP_aes_256_gcm()) and _probe_cipher(EVP_chacha20_poly1305())
            and _probe_cipher(EVP_aes_256_ecb()) and _probe_cipher(EVP_chacha20()))


cdef bint _HAVE_OPENSSL = _openssl_usable()
cdef bint _default_openssl = _HAVE_OPENSSL

#: The libcrypto this module calls directly (None when it is built without one).
OPENSSL_VERSION = dquic_openssl_version().decode("ascii", "replace") if _HAVE_OPENSSL else None


cdef object _openssl_library():
    cdef char path[4096]
    if not _HAVE_OPENSSL:
        return None
    dquic_openssl_library(path, sizeof(path))
    return path.decode("utf-8", "surrogateescape") or None

#: The file the libcrypto called directly was loaded from, as the dynamic linker resolved it
#: (a wheel's vendored copy, the system's libcrypto, ...); None without the openssl backend or
#: where the platform cannot say.
OPENSSL_LIBRARY = _openssl_library()
#: Backends this build can use, the preferred first.
AVAILABLE_BACKENDS = ("openssl", "cryptography") if _HAVE_OPENSSL else ("cryptography",)
#: The backend keys created from now on use (see ``use_backend``).
BACKEND = AVAILABLE_BACKENDS[0]


def use_backend(name):
    """Make ``name`` ("openssl" or "cryptography") the backend of keys created from now on.

    Existing keys keep theirs (a ``OneRttKeys`` keeps its backend across key updates).
    Returns the previous default so callers (tests, benchmarks) can restore it. Raises
    ``ValueError`` for a backend this build does not have.
    """
    global BACKEND, _default_openssl
    if name not in AVAILABLE_BACKENDS:
        raise ValueError("backend %r not available (have %s)" % (name, ", ".join(AVAILABLE_BACKENDS)))
    previous = BACKEND
    BACKEND = name
    _default_openssl = name == "openssl"
    return previous


cdef inline str _backend_name(bint openssl):
    return "openssl" if openssl else "cryptography"


cdef inline void _free_context(void** ctx) noexcept:
    """Free the libcrypto cipher context *ctx, if any, and forget it."""
    if ctx[0] != NULL:
        EVP_CIPHER_CTX_free(<EVP_CIPHER_CTX*>ctx[0])
        ctx[0] = NULL


cdef bint _want_openssl(backend) except -1:
    if backend is None:
        return _default_openssl
    if backend not in AVAILABLE_BACKENDS:
        raise ValueError("backend %r not available (have %s)" % (backend, ", ".join(AVAILABLE_BACKENDS)))
    return backend == "openssl"


cdef inline const unsigned char* _bytes_ptr(bytes b):
    return <const unsigned char*>PyBytes_AS_STRING(b)


# ----------------------------------------------------------------------------- helpers


cpdef bytes hmac_sha256(key, data):
    """HMAC-SHA256(key, data) (32 bytes), as ``hmac.digest(key, data, "sha256")``: through
    one libcrypto context kept for the process when the module has libcrypto (about a
    quarter of the one-shot's cost for a key schedule's short inputs), else that call."""
    cdef bytes k, d
    cdef unsigned char out[32]
    if _HAVE_OPENSSL:
        k = key if PyBytes_CheckExact(key) else bytes(key)
        d = data if PyBytes_CheckExact(data) else bytes(data)
        if PyBytes_GET_SIZE(k) and dquic_hmac_sha256(
                _bytes_ptr(k), <size_t>PyBytes_GET_SIZE(k), _bytes_ptr(d),
                <size_t>PyBytes_GET_SIZE(d), out):
            return PyBytes_FromStringAndSize(<char*>out, 32)
    return _hmac_digest(key, data, "sha256")


def _expand(secret, label, length):
    # HKDF-Expand with SHA-256 (RFC 5869 §2.3). Every output here fits one hash block, where
    # the expansion is T(1) = HMAC-SHA256(secret, label | 0x01) cut to ``length``: one HMAC
    # call instead of building an HKDF object (a fifth of a handshake's key setup).
    if length <= 32:
        return hmac_sha256(secret, label + b"\x01")[:length]
    return HKDFExpand(hashes.SHA256(), length, label).derive(secret)


def derive_packet_keys(secret):
    """(aead key 32 bytes, iv 12 bytes, header-protection key 32 bytes) for a traffic secret."""
    if len(secret) != 32:
        raise ValueError("traffic secrets are 32 bytes")
    secret = bytes(secret)
    return _expand(secret, b"dquic key", 32), _expand(secret, b"dquic iv", 12), _expand(secret, b"dquic hp", 32)


def _derive_key_iv(secret):
    # the AEAD key and IV of derive_packet_keys, without the header-protection key
    secret = bytes(secret)
    if len(secret) != 32:
        raise ValueError("traffic secrets are 32 bytes")
    return _expand(secret, b"dquic key", 32), _expand(secret, b"dquic iv", 12)


def _derive_hp(secret):
    # the header-protection key of derive_packet_keys (it does not change on key update)
    secret = bytes(secret)
    if len(secret) != 32:
        raise ValueError("traffic secrets are 32 bytes")
    return _expand(secret, b"dquic hp", 32)


def next_secret(secret):
    """The next key-update generation's traffic secret (RFC 9001 §6.1, label "dquic ku")."""
    return _expand(bytes(secret), b"dquic ku", 32)


def decode_packet_number(truncated, pn_nbits, expected):
    """RFC 9000 Appendix A.3: recover a full packet number.

    ``expected`` is the largest packet number received so far in this space plus one.
    """
    if not (pn_nbits in (8, 16, 24, 32) and 0 <= truncated < (1 << pn_nbits) and 0 <= expected <= (1 << 62)):
        raise ValueError("packet number arguments out of range")
    return _decode_pn(truncated, pn_nbits, expected)


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class _HeaderProtection:
    """Computes the header-protection mask from a 16-byte sample (RFC 9001 §5.4).

    ``mask(sample)`` returns at least 5 bytes; only the first 5 are used. The compiled
    packet path calls ``c_mask`` (5 mask bytes into a C buffer).
    """

    def __init__(self, cipher, hp_key, backend=None):
        self._key = bytes(hp_key)
        self._chacha = cipher != "AESGCM"
        self._openssl = _want_openssl(backend)
        if self._openssl:
            self._init_openssl()
        elif not self._chacha:
            # §5.4.3: AES in ECB mode over the sample; one long-lived context suffices
            # because ECB has no chaining state between blocks.
            self._ctx = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()
        else:
            # §5.4.4: counter = sample[0:4] (little endian), nonce = sample[4:16]; this is
            # exactly the 16-byte "nonce" layout cryptography's ChaCha20 takes. Re-seeding
            # one context (cryptography >= 43) is ~4x cheaper than building a new one.
            self._ctx = Cipher(algorithms.ChaCha20(self._key, bytes(16)), None).encryptor()
            self._reset = hasattr(self._ctx, "reset_nonce")

    cdef int _init_openssl(self) except -1:
        cdef Py_ssize_t klen = len(self._key)
        cdef const EVP_CIPHER* cipher
        if self._chacha:
            if klen != 32:
                raise ValueError("ChaCha20 header-protection keys are 32 bytes")
            cipher = EVP_chacha20()
        elif klen == 16:
            cipher = EVP_aes_128_ecb()
        elif klen == 24:
            cipher = EVP_aes_192_ecb()
        elif klen == 32:
            cipher = EVP_aes_256_ecb()
        else:
            raise ValueError("AES header-protection keys are 16, 24 or 32 bytes")
        cdef EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new()
        if ctx == NULL:
            raise MemoryError()
        self._octx = ctx
        # For ChaCha20 the IV is set per sample (c_mask); all-zero until then.
        if EVP_EncryptInit_ex(ctx, cipher, NULL, _bytes_ptr(self._key), _ZEROS) != 1:
            raise RuntimeError("libcrypto refused the header-protection key")
        if not self._chacha and EVP_CIPHER_CTX_set_padding(ctx, 0) != 1:
            raise RuntimeError("libcrypto refused to disable ECB padding")
        return 0

    def __dealloc__(self):
        self.release_c()

    cdef void release_c(self) noexcept:
        # the libcrypto context goes (the key stays): the next mask makes it again
        _free_context(&self._octx)

    @property
    def backend(self):
        """"openssl" or "cryptography"."""
        return _backend_name(self._openssl)

    cdef int c_mask(self, const unsigned char* sample, unsigned char* mask) except -1:
        """Write the first 5 mask bytes for the 16-byte ``sample`` into ``mask``."""
        cdef unsigned char block[16]
        cdef int outl = 0
        cdef bint ok
        cdef bytes m
        if self._openssl and self._octx == NULL:
            self._init_openssl()
        cdef EVP_CIPHER_CTX* ctx = <EVP_CIPHER_CTX*>self._octx
        if self._openssl:
            if self._chacha:
                # §5.4.4: EVP_chacha20's 16-byte IV is counter (4 bytes, little endian) ||
                # nonce (12 bytes), exactly the sample; the mask is the keystream over zeros.
                ok = (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, sample) == 1
                      and EVP_EncryptUpdate(ctx, mask, &outl, _ZEROS, 5) == 1 and outl == 5)
            else:
                ok = EVP_EncryptUpdate(ctx, block, &outl, sample, 16) == 1 and outl == 16
                memcpy(mask, block, 5)
            if not ok:
                raise RuntimeError("header protection failed in libcrypto")
            return 0
        m = self.mask(PyBytes_FromStringAndSize(<const char*>sample, 16))
        memcpy(mask, PyBytes_AS_STRING(m), 5)
        return 0

    cpdef bytes mask(self, sample):
        cdef bytes s
        cdef unsigned char out[5]
        if self._openssl:
            s = sample if type(sample) is bytes else bytes(sample)
            if PyBytes_GET_SIZE(s) != _SAMPLE:
                raise ValueError("header-protection samples are 16 bytes")
            if not self._chacha:
                return self._ecb(_bytes_ptr(s))
            self.c_mask(_bytes_ptr(s), out)
            return PyBytes_FromStringAndSize(<const char*>out, 5)
        if not self._chacha:
            return self._ctx.update(sample)
        if self._reset:
            self._ctx.reset_nonce(sample)
            return self._ctx.update(_ZERO5)
        return Cipher(algorithms.ChaCha20(self._key, sample), None).encryptor().update(_ZERO5)

    cdef bytes _ecb(self, const unsigned char* sample):
        # the full 16-byte AES block, like the cryptography backend returns
        cdef unsigned char block[16]
        cdef int outl = 0
        if self._octx == NULL:
            self._init_openssl()
        if EVP_EncryptUpdate(<EVP_CIPHER_CTX*>self._octx, block, &outl, sample, 16) != 1 or outl != 16:
            raise RuntimeError("header protection failed in libcrypto")
        return PyBytes_FromStringAndSize(<const char*>block, 16)


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class _Keys:
    """AEAD state for one direction and one key-update generation.

    With the openssl backend the key lives in C memory (wiped when the object dies) and in
    up to two ``EVP_CIPHER_CTX`` (one for sealing, one for opening, each created on first
    use and initialised with the key once); per packet only the nonce changes.
    """

    def __init__(self, cipher, secret, backend=None):
        key, iv = _derive_key_iv(secret)
        self.secret = bytes(secret)
        self._setup(cipher, key, iv, backend)

    @staticmethod
    def from_key_iv(cipher, key, iv, backend=None):
        """Keys from raw material instead of a secret (for published test vectors)."""
        cdef _Keys k = _Keys.__new__(_Keys)
        k.secret = b""
        k._setup(cipher, bytes(key), bytes(iv), backend)
        return k

    cdef int _setup(self, cipher, bytes key, bytes iv, backend) except -1:
        if cipher not in _AEADS:
            raise ValueError("unknown cipher %r" % (cipher,))
        if PyBytes_GET_SIZE(iv) != 12:
            raise ValueError("iv is 12 bytes")
        self._chacha = cipher == "ChaChaPoly"
        self._openssl = _want_openssl(backend)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
        cdef bint ok
        if self._openssl:
            if self._chacha:
                ok = klen == 32
                self._cipher = EVP_chacha20_poly1305()
            else:
                ok = klen in (16, 24, 32)
                self._cipher = (EVP_aes_128_gcm() if klen == 16 else
                                EVP_aes_192_gcm() if klen == 24 else EVP_aes_256_gcm())
            if not ok:
                raise ValueError("bad AEAD key length for %s" % (cipher,))
            memcpy(self._key, PyBytes_AS_STRING(key), klen)
            self.aead = None
        else:
            self.aead = _AEADS[cipher](key)
        memcpy(self.iv, PyBytes_AS_STRING(iv), 12)
        return 0

    def __dealloc__(self):
        self.release_c()
        OPENSSL_cleanse(self._key, 32)

    cdef void release_c(self) noexcept:
        # the libcrypto contexts go (the key stays): the next packet makes its context again
        _free_context(&self._ectx)
        _free_context(&self._dctx)

    @property
    def backend(self):
        """"openssl" or "cryptography"."""
        return _backend_name(self._openssl)

    cdef void* _context(self, bint sealing) except NULL:
        # A context keyed once; the nonce is set per packet (EVP_*Init_ex with only an IV).
        cdef EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new()
        if ctx == NULL:
            raise MemoryError()
        cdef int ok
        cdef const EVP_CIPHER* cipher = <const EVP_CIPHER*>self._cipher
        if sealing:
            ok = EVP_EncryptInit_ex(ctx, cipher, NULL, NULL, NULL) == 1
            ok = ok and EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1
            ok = ok and EVP_EncryptInit_ex(ctx, NULL, NULL, self._key, NULL) == 1
        else:
            ok = EVP_DecryptInit_ex(ctx, cipher, NULL, NULL, NULL) == 1
            ok = ok and EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1
            ok = ok and EVP_DecryptInit_ex(ctx, NULL, NULL, self._key, NULL) == 1
        if not ok:
            EVP_CIPHER_CTX_free(ctx)
            raise RuntimeError("libcrypto refused the AEAD key")
        if sealing:
            self._ectx = ctx
        else:
            self._dctx = ctx
        return ctx

    cdef void c_nonce(self, uint64_t pn, unsigned char* n) noexcept nogil:
        # RFC 9001 §5.3: iv XOR the packet number left-padded to 12 bytes.
        cdef int i
        memcpy(n, self.iv, 12)
        for i in range(8):
            n[11 - i] ^= <unsigned char>((pn >> (8 * i)) & 0xFF)

    cdef bytes nonce(self, uint64_t pn):
        cdef unsigned char n[12]
        self.c_nonce(pn, n)
        return PyBytes_FromStringAndSize(<char*>n, 12)

    def seal(self, packet_number, ad, payload):
        """AEAD-encrypt ``payload`` with the nonce for ``packet_number`` and associated data
        ``ad``; returns ciphertext + tag. No header protection (tests, benchmarks)."""
        cdef bytes a = bytes(ad), p = bytes(payload)
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        if not self._openssl:
            return self.aead.encrypt(self.nonce(packet_number), p, a)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(p) + _TAG)
        self.c_seal(packet_number, _bytes_ptr(a), PyBytes_GET_SIZE(a), _bytes_ptr(p), PyBytes_GET_SIZE(p),
                    <unsigned char*>PyBytes_AS_STRING(out))
        return out

    def open(self, packet_number, ad, ciphertext):
        """Inverse of ``seal``; raises ``DecryptionFailed`` if the input does not authenticate."""
        cdef bytes a = bytes(ad), c = bytes(ciphertext)
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        if not self._openssl:
            try:
                return self.aead.decrypt(self.nonce(packet_number), c, a)
            except InvalidTag:
                raise DecryptionFailed() from None
        out = self.c_open(packet_number, _bytes_ptr(a), PyBytes_GET_SIZE(a), _bytes_ptr(c), PyBytes_GET_SIZE(c))
        if out is None:
            raise DecryptionFailed()
        return out

    cdef int c_seal(self, uint64_t pn, const unsigned char* ad, Py_ssize_t adlen,
                    const unsigned char* src, Py_ssize_t n, unsigned char* dst,
                    const Gather* g=NULL, int ng=0) except -1:
        """openssl backend: encrypt ``n`` bytes of ``src`` into ``dst`` and append the
        16-byte tag (``dst`` has room for ``n + 16``). ``ad`` may overlap ``dst`` only
        before ``dst`` (it is read before anything is written). The ``ng`` pieces ``g`` (in
        order, not overlapping, ``pos`` from ``src``) are read from where they are instead of
        from ``src`` (which holds no copy of them)."""
        cdef EVP_CIPHER_CTX* ctx = <EVP_CIPHER_CTX*>self._ectx
        if ctx == NULL:
            ctx = <EVP_CIPHER_CTX*>self._context(True)
        if adlen > INT_MAX or n > INT_MAX - _TAG:
            raise ValueError("packet too large")
        cdef unsigned char nonce[12]
        self.c_nonce(pn, nonce)
        # The GIL stays held: per packet the cipher runs a few hundred ns, and releasing and
        # re-taking the GIL measured ~40 ns per call (+7 % per packet) and can stall this
        # thread for a switch interval when another thread is busy; holding it also keeps
        # the context from being used by two threads at once.
        if not _aead_seal(ctx, nonce, ad, <int>adlen, src, <int>n, dst, g, ng):
            raise RuntimeError("AEAD encryption failed in libcrypto")
        return 0

    cdef object c_open(self, uint64_t pn, const unsigned char* ad, Py_ssize_t adlen,
                       const unsigned char* src, Py_ssize_t n, unsigned char* into=NULL):
        """openssl backend: authenticate and decrypt ``n`` bytes of ciphertext+tag.
        Returns the plaintext ``bytes`` or None when it does not authenticate; with ``into``
        (room for ``n - 16`` bytes) the plaintext goes there and the result is True or
        None."""
        cdef EVP_CIPHER_CTX* ctx = <EVP_CIPHER_CTX*>self._dctx
        if ctx == NULL:
            ctx = <EVP_CIPHER_CTX*>self._context(False)
        if n < _TAG or n > INT_MAX or adlen > INT_MAX:
            return None
        cdef unsigned char nonce[12]
        self.c_nonce(pn, nonce)
        if into != NULL:
            return True if _aead_open(ctx, nonce, ad, <int>adlen, src, <int>n, into) else None
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n - _TAG)
        cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
        return out if _aead_open(ctx, nonce, ad, <int>adlen, src, <int>n, o) else None


cdef inline int _aead_update(EVP_CIPHER_CTX* ctx, const unsigned char* nonce,
                             const unsigned char* ad, int adlen, const unsigned char* src, int n,
                             unsigned char* dst, int* outl) noexcept nogil:
    # what sealing and opening share, in the direction the context was made for (enc -1
    # keeps it): the packet's nonce, the associated data, then the n bytes of src into dst
    outl[0] = 0
    if EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, -1) != 1:
        return 0
    if EVP_CipherUpdate(ctx, NULL, outl, ad, adlen) != 1:
        return 0
    outl[0] = 0
    return n <= 0 or EVP_CipherUpdate(ctx, dst, outl, src, n) == 1


cdef int _aead_seal(EVP_CIPHER_CTX* ctx, const unsigned char* nonce, const unsigned char* ad, int adlen,
                    const unsigned char* src, int n, unsigned char* dst, const Gather* g,
                    int ng) noexcept nogil:
    cdef int outl = 0, fin = 0, done, at = 0, i, k
    if ng == 0:
        if not _aead_update(ctx, nonce, ad, adlen, src, n, dst, &outl):
            return 0
    else:
        # the same, in pieces: from src up to each gathered piece, the piece from where it is
        # (the AEAD modes in use encrypt any split of the input alike, every byte at once)
        if not _aead_update(ctx, nonce, ad, adlen, src, 0, dst, &outl):
            return 0
        for i in range(ng + 1):
            k = <int>g[i].pos if i < ng else n
            if k > at:
                done = 0
                if EVP_CipherUpdate(ctx, dst + at, &done, src + at, k - at) != 1:
                    return 0
                outl += done
            if i < ng:
                done = 0
                if EVP_CipherUpdate(ctx, dst + k, &done, g[i].src, <int>g[i].n) != 1:
                    return 0
                outl += done
                at = k + <int>g[i].n
    if EVP_EncryptFinal_ex(ctx, dst + outl, &fin) != 1 or outl + fin != n:
        return 0
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, _TAG, dst + n) == 1


cdef int _aead_open(EVP_CIPHER_CTX* ctx, const unsigned char* nonce, const unsigned char* ad, int adlen,
                    const unsigned char* src, int n, unsigned char* dst) noexcept nogil:
    # n includes the tag (n >= 16 checked by the caller)
    cdef int outl = 0, fin = 0
    cdef int clen = n - _TAG
    if not _aead_update(ctx, nonce, ad, adlen, src, clen, dst, &outl):
        return 0
    # OpenSSL copies the expected tag; the cast only satisfies the generic ctrl signature.
    if EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, _TAG, <void*>(src + clen)) != 1:
        return 0
    return EVP_DecryptFinal_ex(ctx, dst + outl, &fin) == 1 and outl + fin == clen


# ----------------------------------------------------------------------------- views


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class PacketProtection:
    """One direction of 1-RTT protection, a view onto a shared ``OneRttKeys``.

    The sending view offers ``encrypt_packet``; the receiving view ``decrypt_packet``.
    Both expose ``tag_size`` (16: reserve this many bytes after the payload when sizing
    packets and long-header Length fields) and ``keys`` (the shared ``OneRttKeys``).
    Compiled callers may ``cimport`` this class and call ``c_seal`` / ``c_open`` (C
    buffers in, no intermediate objects besides the result).
    """

    def __init__(self, OneRttKeys keys, bint sending):
        self.keys = keys
        self.sending = sending
        self.tag_size = _TAG

    @property
    def key_phase(self):
        return self.keys.key_phase

    def encrypt_packet(self, plain_header, plain_payload, packet_number):
        """Protect one packet; returns header (with header protection) + ciphertext + tag.

        ``plain_header`` ends with the truncated packet number, whose length is taken from
        the low 2 bits of byte 0. For short headers the key-phase bit is set here. The
        truncated packet number plus payload must be at least 4 bytes so a full sample
        exists (RFC 9001 §5.4.2): pad the payload (PADDING frames) if needed.
        """
        if not self.sending:
            raise TypeError("this is the receiving half; use keys.sender")
        return self.keys._seal(plain_header, plain_payload, packet_number)

    cdef bytes c_seal(self, const unsigned char* header, Py_ssize_t hlen,
                      const unsigned char* payload, Py_ssize_t plen, int64_t packet_number):
        """``encrypt_packet`` for compiled callers: the same checks and result, the header
        and payload read from C memory (which must stay valid for the call)."""
        if not self.sending:
            raise TypeError("this is the receiving half; use keys.sender")
        return self.keys._seal_c(header, hlen, payload, plen, None, packet_number)

    cdef Py_ssize_t c_seal_into(self, const unsigned char* header, Py_ssize_t hlen,
                                const unsigned char* payload, Py_ssize_t plen,
                                int64_t packet_number, unsigned char* dst,
                                const Gather* g=NULL, int ng=0) except -1:
        """``c_seal`` writing the protected packet to ``dst`` (room for ``hlen + plen +
        tag_size`` bytes, not overlapping the inputs) instead of a new ``bytes``; returns its
        length. ``g``/``ng``: pieces of the payload read from elsewhere (``_Keys.c_seal``)."""
        if not self.sending:
            raise TypeError("this is the receiving half; use keys.sender")
        return self.keys._seal_into(header, hlen, payload, plen, None, packet_number, dst, g, ng)

    cdef object c_open(self, const unsigned char* packet, Py_ssize_t n, Py_ssize_t pn_offset,
                       int64_t expected_packet_number, int64_t* packet_number, unsigned char* first_byte,
                       unsigned char* into=NULL):
        """``decrypt_packet`` for compiled callers: ``packet`` is C memory (``n`` bytes, one
        packet). Returns the payload (``bytes``) and stores the full packet number and the
        unprotected first byte (the header is the input's first ``pn_offset + pn_len`` bytes
        with that first byte and the truncated packet number). Raises like
        ``decrypt_packet``. With ``into`` (room for ``n`` bytes) the openssl backend writes the
        payload there instead and returns its length (an int); the other backend still
        returns ``bytes``."""
        if self.sending:
            raise TypeError("this is the sending half; use keys.receiver")
        return self.keys._open_c(packet, n, pn_offset, expected_packet_number, packet_number,
                                 first_byte, into)

    def decrypt_packet(self, packet, pn_offset, expected_packet_number):
        """Remove protection from one packet.

        ``packet`` is exactly one packet (for long headers, cut at its Length field);
        ``pn_offset`` is where the packet number starts; ``expected_packet_number`` is the
        largest packet number received so far in this space plus one (RFC 9000 A.3).
        Returns (unprotected header incl. packet number, payload, full packet number).
        Raises ``DecryptionFailed`` (drop the packet) or, once the integrity limit is
        exceeded, ``ProtocolError`` with ``AEAD_LIMIT_REACHED`` (close the connection).
        """
        if self.sending:
            raise TypeError("this is the sending half; use keys.receiver")
        return self.keys._open(packet, pn_offset, expected_packet_number)

    def request_key_update(self):
        """Initiate a key update now (``OneRttKeys.update_keys``)."""
        self.keys.update_keys()

    def discard_old_keys(self):
        """Drop retained previous-generation receive keys (``OneRttKeys.discard_old_keys``)."""
        self.keys.discard_old_keys()


@cython.no_gc  # holds only leaf objects (keys, buffers): no cycle can pass through it
cdef class OneRttKeys:
    """Both directions of 1-RTT packet protection with key update (RFC 9001 §6).

    Create once the handshake completes (``dquic.handshake`` does it) and use
    ``sender``/``receiver``. Key updates:

    * we initiate automatically once ``key_update_interval`` packets were sealed with the
      current key (for AES-GCM never later than its confidentiality limit), or on
      ``update_keys()``; allowed only when ``can_update`` (a packet from the peer has
      authenticated in the current phase, i.e. the peer has the current keys);
    * a peer-initiated update is detected when a packet with the other phase bit and a
      packet number above those seen in the current phase authenticates with the next
      generation's keys; our sending keys then update too;
    * after any update the previous receive keys stay usable for reordered packets until
      the connection calls ``discard_old_keys()`` (RFC 9001 §6.5 suggests 3*PTO after the
      update). ``has_old_keys`` says whether that timer is needed.

    ``backend`` ("openssl", "cryptography" or None for the module default ``BACKEND``)
    chooses how the primitives are reached; the packets are the same either way.
    """

    def __init__(self, send_secret, recv_secret, cipher="ChaChaPoly", *,
                 key_update_interval=DEFAULT_KEY_UPDATE_INTERVAL, confidentiality_limit=-1,
                 integrity_limit=None, backend=None):
        if cipher not in _AEADS:
            raise ValueError("unknown cipher %r" % (cipher,))
        if key_update_interval < 1:
            raise ValueError("key_update_interval must be positive")
        self.backend = _backend_name(_want_openssl(backend))
        self.cipher = cipher
        if confidentiality_limit == -1:
            confidentiality_limit = CONFIDENTIALITY_LIMITS[cipher]
        self.confidentiality_limit = confidentiality_limit
        self._conf_limit = -1 if confidentiality_limit is None else confidentiality_limit
        self.integrity_limit = INTEGRITY_LIMITS[cipher] if integrity_limit is None else integrity_limit
        if confidentiality_limit is not None:
            key_update_interval = min(key_update_interval, confidentiality_limit)
        self.key_update_interval = key_update_interval

        backend = self.backend
        self._hp_send = _HeaderProtection(cipher, _derive_hp(send_secret), backend)
        self._hp_recv = _HeaderProtection(cipher, _derive_hp(recv_secret), backend)
        self._send = _Keys(cipher, send_secret, backend)
        self._recv = _Keys(cipher, recv_secret, backend)
        self._prev_recv = None
        # Precomputed so that trying the next generation costs the same as any other
        # decryption (RFC 9001 §6.3, timing side channels).
        self._next_recv = _Keys(cipher, next_secret(self._recv.secret), backend)
        self._recv_first_pn = -1
        self.key_phase = 0
        self.generation = 0
        self.key_updates = 0
        self.packets_sent_in_phase = 0
        self.packets_received_in_phase = 0
        self.failed_decryptions = 0
        self.integrity_limit_reached = False
        self.sender = PacketProtection(self, True)
        self.receiver = PacketProtection(self, False)

    # ------------------------------------------------------------------ key update
    @property
    def can_update(self):
        """True when we may initiate a key update (RFC 9001 §6.1 precondition, simplified:
        the peer has already sent a packet that authenticated with the current keys)."""
        return self._recv_first_pn >= 0

    @property
    def has_old_keys(self):
        """True while previous-generation receive keys are retained."""
        return self._prev_recv is not None

    def update_keys(self):
        """Initiate a key update now. Raises ``RuntimeError`` if ``can_update`` is false."""
        if self._recv_first_pn < 0:
            raise RuntimeError("cannot initiate a key update before the peer confirms the current keys")
        self._rotate()

    cdef _rotate(self):
        cipher = self.cipher
        backend = self.backend
        self._send = _Keys(cipher, next_secret(self._send.secret), backend)
        self._prev_recv = self._recv
        self._recv = self._next_recv
        self._next_recv = _Keys(cipher, next_secret(self._recv.secret), backend)
        self._recv_first_pn = -1
        self.key_phase ^= 1
        self.generation += 1
        self.key_updates += 1
        self.packets_sent_in_phase = 0
        self.packets_received_in_phase = 0

    def discard_old_keys(self):
        """Drop the previous generation's receive keys (call ~3*PTO after an update)."""
        self._prev_recv = None

    # ------------------------------------------------------------------ idle
    def release_contexts(self):
        """Free the libcrypto cipher contexts (about 3.6 KB for a connection's keys in both
        directions, AES-GCM) while the connection is idle; the next packet sealed or opened
        makes the one it needs again (a few microseconds). Keys and state are kept."""
        self._hp_send.release_c()
        self._hp_recv.release_c()
        self._send.release_c()
        self._recv.release_c()
        self._next_recv.release_c()
        if self._prev_recv is not None:
            self._prev_recv.release_c()

    @property
    def contexts(self):
        """libcrypto cipher contexts held now (0 with the cryptography backend)."""
        cdef int n = 0
        cdef _Keys k
        n += self._hp_send._octx != NULL
        n += self._hp_recv._octx != NULL
        for k in (self._send, self._recv, self._next_recv, self._prev_recv):
            if k is not None:
                n += (k._ectx != NULL) + (k._dctx != NULL)
        return n

    # ------------------------------------------------------------------ sealing
    cdef bytes _seal(self, plain_header, plain_payload, packet_number):
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        cdef bytes hb = plain_header if type(plain_header) is bytes else bytes(plain_header)
        cdef Py_buffer view
        if PyBytes_CheckExact(plain_payload):
            return self._seal_c(_bytes_ptr(hb), PyBytes_GET_SIZE(hb), _bytes_ptr(plain_payload),
                                PyBytes_GET_SIZE(plain_payload), plain_payload, packet_number)
        PyObject_GetBuffer(plain_payload, &view, PyBUF_SIMPLE)
        try:
            return self._seal_c(_bytes_ptr(hb), PyBytes_GET_SIZE(hb), <const unsigned char*>view.buf,
                                view.len, plain_payload, packet_number)
        finally:
            PyBuffer_Release(&view)

    cdef bytes _seal_c(self, const unsigned char* h, Py_ssize_t hlen, const unsigned char* payload,
                       Py_ssize_t plen, object payload_obj, int64_t packet_number):
        # payload_obj: the payload as a Python object when the caller has one (the
        # cryptography backend needs one; None makes a copy from ``payload``).
        cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + plen + _TAG)
        cdef Py_ssize_t n = self._seal_into(h, hlen, payload, plen, payload_obj, packet_number,
                                            <unsigned char*>PyBytes_AS_STRING(out))
        if n != hlen + plen + _TAG:
            out = out[:n]
        return out

    cdef Py_ssize_t _seal_into(self, const unsigned char* h, Py_ssize_t hlen,
                               const unsigned char* payload, Py_ssize_t plen, object payload_obj,
                               int64_t packet_number, unsigned char* o,
                               const Gather* g=NULL, int ng=0) except -1:
        # Seal into ``o`` (room for hlen + plen + 16, not overlapping h or payload); returns
        # the packet's length.
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        cdef uint64_t pn = <uint64_t>packet_number
        if self.packets_sent_in_phase >= self.key_update_interval and self._recv_first_pn >= 0:
            self._rotate()
        if self._conf_limit >= 0 and self.packets_sent_in_phase >= self._conf_limit:
            raise ProtocolError("confidentiality limit reached without a key update", ErrorCode.AEAD_LIMIT_REACHED)
        if hlen == 0:
            raise ValueError("empty header")
        cdef unsigned char first = h[0]
        cdef int pn_len = (first & 0x03) + 1
        cdef Py_ssize_t pn_offset = hlen - pn_len
        cdef int i
        cdef uint64_t trunc = 0
        if pn_offset < 1:
            raise ValueError("header shorter than its packet number")
        if plen + pn_len < 4:
            raise ValueError("payload too short for a header-protection sample; pad it")
        for i in range(pn_len):
            trunc = (trunc << 8) | h[pn_offset + i]
        if trunc != (pn & ((<uint64_t>1 << (8 * pn_len)) - 1)):
            raise ValueError("header packet number does not match packet_number")
        cdef bint long_header = (first & 0x80) != 0
        if not long_header:
            first = (first & 0xFB) | (self.key_phase << 2)
        cdef _Keys keys = self._send
        cdef bytes ct, ad
        cdef Py_ssize_t clen
        if keys._openssl:
            memcpy(o, h, hlen)
            o[0] = first
            # the associated data is the header as just written (key phase set, no HP yet)
            keys.c_seal(pn, o, hlen, payload, plen, o + hlen, g, ng)
            clen = plen + _TAG
        else:
            ad = PyBytes_FromStringAndSize(<const char*>h, hlen)
            (<unsigned char*>PyBytes_AS_STRING(ad))[0] = first
            if payload_obj is None or ng:
                payload_obj = PyBytes_FromStringAndSize(<const char*>payload, plen)
                for i in range(ng):  # (the pieces read from elsewhere, in place)
                    memcpy(PyBytes_AS_STRING(payload_obj) + g[i].pos, g[i].src, <size_t>g[i].n)
            ct = keys.aead.encrypt(keys.nonce(pn), payload_obj, ad)
            clen = PyBytes_GET_SIZE(ct)
            memcpy(o, PyBytes_AS_STRING(ad), hlen)
            memcpy(o + hlen, PyBytes_AS_STRING(ct), clen)
        self.packets_sent_in_phase += 1
        # RFC 9001 §5.4.2: the sample starts 4 bytes after the packet number offset.
        cdef unsigned char mask[5]
        self._hp_send.c_mask(o + pn_offset + 4, mask)
        o[0] = first ^ (mask[0] & (0x0F if long_header else 0x1F))
        for i in range(pn_len):
            o[pn_offset + i] ^= mask[1 + i]
        return hlen + clen

    # ------------------------------------------------------------------ opening
    cdef _fail(self):
        self.failed_decryptions += 1
        if self.failed_decryptions > self.integrity_limit:
            self.integrity_limit_reached = True
            return ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        return DecryptionFailed()

    cdef tuple _open(self, packet, pn_offset_obj, expected_obj):
        if self.integrity_limit_reached:
            raise ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        cdef bytes data
        if type(packet) is bytes:
            data = packet
        else:
            try:
                data = bytes(packet)
            except TypeError:
                raise DecryptionFailed("not a bytes-like packet") from None
        cdef Py_ssize_t dlen = PyBytes_GET_SIZE(data)
        if type(pn_offset_obj) is not int or not 1 <= pn_offset_obj <= dlen:
            raise DecryptionFailed("bad packet-number offset")
        if not 0 <= expected_obj <= _PN_MAX + 1:
            raise DecryptionFailed("expected packet number out of range")
        cdef Py_ssize_t pn_offset = pn_offset_obj
        cdef int64_t pn = 0
        cdef unsigned char first = 0
        payload = self._open_c(_bytes_ptr(data), dlen, pn_offset, expected_obj, &pn, &first)
        # the unprotected header: byte 0 and the truncated packet number restored
        cdef int pn_len = (first & 0x03) + 1
        cdef bytes hdr = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), pn_offset + pn_len)
        cdef unsigned char* hp = <unsigned char*>PyBytes_AS_STRING(hdr)
        hp[0] = first
        cdef int i
        for i in range(pn_len):
            hp[pn_offset + pn_len - 1 - i] = <unsigned char>((pn >> (8 * i)) & 0xFF)
        return hdr, payload, pn

    cdef object _open_c(self, const unsigned char* d, Py_ssize_t dlen, Py_ssize_t pn_offset,
                        int64_t expected, int64_t* pn_out, unsigned char* first_out,
                        unsigned char* into=NULL):
        # The core of decrypt_packet on C memory: returns the payload (bytes), stores the
        # full packet number and the unprotected first byte. Raises DecryptionFailed or,
        # past the integrity limit, ProtocolError(AEAD_LIMIT_REACHED).
        if self.integrity_limit_reached:
            raise ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        if pn_offset < 1 or dlen < pn_offset + 4 + _SAMPLE:
            raise DecryptionFailed("packet too short")
        if not 0 <= expected <= _PN_MAX + 1:
            raise DecryptionFailed("expected packet number out of range")
        cdef unsigned char mask[5]
        self._hp_recv.c_mask(d + pn_offset + 4, mask)
        cdef unsigned char first = d[0]
        cdef bint long_header = (first & 0x80) != 0
        first ^= mask[0] & (0x0F if long_header else 0x1F)
        cdef int pn_len = (first & 0x03) + 1
        cdef Py_ssize_t pn_end = pn_offset + pn_len
        # The associated data is the unprotected header (RFC 9001 §5.3): rebuilt on the
        # stack for the usual header sizes, in a temporary bytes object otherwise.
        cdef unsigned char stack_hdr[64]
        cdef unsigned char* hp = stack_hdr
        cdef bytes big_hdr
        if pn_end > 64:
            big_hdr = PyBytes_FromStringAndSize(NULL, pn_end)
            hp = <unsigned char*>PyBytes_AS_STRING(big_hdr)
        memcpy(hp, d, pn_end)
        hp[0] = first
        cdef int64_t truncated = 0
        cdef int i
        for i in range(pn_len):
            hp[pn_offset + i] ^= mask[1 + i]
            truncated = (truncated << 8) | hp[pn_offset + i]
        cdef int64_t pn = _decode_pn(truncated, pn_len * 8, expected)
        if pn > _PN_MAX or pn < 0:
            raise DecryptionFailed("packet number out of range")

        # Choose the key generation (RFC 9001 §6.3, §6.5).
        cdef int which = 0  # 0 current, -1 previous, 1 next
        cdef _Keys keys = self._recv
        if not long_header and ((first & _KP) >> 2) != self.key_phase:
            if self._prev_recv is not None and (self._recv_first_pn < 0 or pn < self._recv_first_pn):
                keys, which = self._prev_recv, -1
            else:
                keys, which = self._next_recv, 1
        if keys._openssl:
            payload = keys.c_open(<uint64_t>pn, hp, pn_end, d + pn_end, dlen - pn_end, into)
            if payload is None:
                raise self._fail()
            if into != NULL:
                payload = dlen - pn_end - _TAG  # (the length of what went to ``into``)
        else:
            try:
                payload = keys.aead.decrypt(keys.nonce(<uint64_t>pn),
                                            PyBytes_FromStringAndSize(<const char*>(d + pn_end), dlen - pn_end),
                                            PyBytes_FromStringAndSize(<const char*>hp, pn_end))
            except InvalidTag:
                raise self._fail() from None
        if which == 1:
            # The peer initiated a key update; follow it (RFC 9001 §6.2).
            self._rotate()
        if which >= 0:
            if self._recv_first_pn < 0 or pn < self._recv_first_pn:
                self._recv_first_pn = pn
            self.packets_received_in_phase += 1
        pn_out[0] = pn
        first_out[0] = first
        return payload


class NullProtection:
    """The PacketProtection interface without cryptography (tag_size 0).

    ``encrypt_packet`` returns header + payload unchanged; ``decrypt_packet`` reads the
    packet-number length from byte 0 and decodes the full packet number.
    """

    tag_size = 0
    key_phase = 0
    keys = None

    def encrypt_packet(self, plain_header, plain_payload, packet_number):
        """Return ``plain_header + plain_payload`` (after checking the header is sane)."""
        if not plain_header:
            raise ValueError("empty header")
        pn_len = (plain_header[0] & 3) + 1
        if len(plain_header) < pn_len + 1:
            raise ValueError("header shorter than its packet number")
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        if int.from_bytes(plain_header[-pn_len:], "big") != packet_number & ((1 << (8 * pn_len)) - 1):
            raise ValueError("header packet number does not match packet_number")
        return bytes(plain_header) + bytes(plain_payload)

    def decrypt_packet(self, packet, pn_offset, expected_packet_number):
        """Split an unprotected packet into (header incl. packet number, payload, full pn)."""
        try:
            data = bytes(packet)
        except TypeError:
            raise DecryptionFailed("not a bytes-like packet") from None
        if type(pn_offset) is not int or pn_offset < 1 or len(data) < pn_offset + 1:
            raise DecryptionFailed("packet too short")
        pn_len = (data[0] & 3) + 1
        pn_end = pn_offset + pn_len
        if len(data) < pn_end:
            raise DecryptionFailed("packet too short")
        if not 0 <= expected_packet_number <= _PN_MAX + 1:
            raise DecryptionFailed("expected packet number out of range")
        truncated = int.from_bytes(data[pn_offset:pn_end], "big")
        pn = _decode_pn(truncated, pn_len * 8, expected_packet_number)
        if pn > _PN_MAX:
            raise DecryptionFailed("packet number out of range")
        return data[:pn_end], data[pn_end:], pn
