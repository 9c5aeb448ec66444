-- host.crypto (core/crypto.c), in-process through build/host.so.
local h = require("spec.support.helpers")
local crypto = h.host.crypto

local function hex(s) return crypto.hex(s) end

local function unhex(s)
  return (s:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

describe("host.crypto", function()
  describe("sha256", function()
    it("matches the FIPS 180-2 test vectors", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(crypto.sha256("abc")))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", crypto.sha256_hex(""))
      assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        crypto.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    end)

    it("hashes bytes, NULs included", function()
      assert.not_equal(crypto.sha256_hex("a\0b"), crypto.sha256_hex("a\0c"))
      assert.equal(32, #crypto.sha256("a\0b"))
    end)
  end)

  describe("hmac_sha256", function()
    it("matches the RFC 4231 test cases", function()
      assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        hex(crypto.hmac_sha256(string.rep("\11", 20), "Hi There")))
      assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        hex(crypto.hmac_sha256("Jefe", "what do ya want for nothing?")))
      -- a key longer than the block size is hashed first
      assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        hex(crypto.hmac_sha256(string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First")))
    end)

    it("accepts an empty key", function()
      assert.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
        hex(crypto.hmac_sha256("", "")))
    end)
  end)

  describe("b64url", function()
    it("encodes without padding in the URL-safe alphabet", function()
      assert.equal("", crypto.b64url_encode(""))
      assert.equal("Zg", crypto.b64url_encode("f"))
      assert.equal("Zm8", crypto.b64url_encode("fo"))
      assert.equal("Zm9v", crypto.b64url_encode("foo"))
      assert.equal("-_8", crypto.b64url_encode("\251\255"))
    end)

    it("round-trips every length of random bytes", function()
      for n = 0, 100 do
        local bytes = crypto.random(n)
        local enc = crypto.b64url_encode(bytes)
        assert.truthy(enc:match("^[A-Za-z0-9_-]*$"))
        assert.equal(bytes, crypto.b64url_decode(enc))
      end
    end)

    it("refuses padding, the standard alphabet, impossible lengths and non-canonical endings", function()
      -- "Zh" and "Zm9" would decode to "f" and "fo" with stray low bits set; only "Zg"
      -- and "Zm8" are their encodings.
      for _, bad in ipairs{ "Zg==", "Zm8=", "+/8", "Zm9v!", "Zm9vY", "Zh", "Zm9", "Zm\0v" } do
        local v, err = crypto.b64url_decode(bad)
        assert.is_nil(v, bad)
        assert.equal("invalid base64url", err)
      end
      assert.equal("fo", crypto.b64url_decode("Zm8"))
    end)
  end)

  describe("random", function()
    it("returns the number of bytes asked for, different each time", function()
      assert.equal("", crypto.random(0))
      local a, b = crypto.random(32), crypto.random(32)
      assert.equal(32, #a)
      assert.not_equal(a, b)
      assert.equal(1048576, #crypto.random(1048576))
    end)

    it("raises on a negative or huge length", function()
      assert.has_error(function() crypto.random(-1) end)
      assert.has_error(function() crypto.random(1048577) end)
      assert.has_error(function() crypto.random("x") end)
    end)
  end)

  describe("hex", function()
    it("writes lowercase hex", function()
      assert.equal("00ff10ab", crypto.hex(unhex("00FF10AB")))
      assert.equal("", crypto.hex(""))
    end)
  end)

  describe("equal", function()
    it("compares whole byte strings", function()
      assert.is_true(crypto.equal("", ""))
      assert.is_true(crypto.equal("same\0bytes", "same\0bytes"))
      assert.is_false(crypto.equal("same\0bytes", "same\0bytez"))
      assert.is_false(crypto.equal("abc", "abcd"))
      assert.is_false(crypto.equal("abc", ""))
    end)
  end)

  describe("uuid", function()
    it("makes distinct version 4 UUIDs", function()
      local seen = {}
      for _ = 1, 1000 do
        local u = crypto.uuid()
        assert.truthy(u:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"), u)
        assert.equal(u:lower(), u)
        assert.is_nil(seen[u])
        seen[u] = true
      end
    end)
  end)
end)
