-- bench/pyrandom.lua: Python's `random` module (MT19937, seeded as
-- random.seed(n) does for an int n >= 0), for the draws the PyTorch twins
-- make: randrange, choice, sample.  With the same seed the nasrt bench
-- scripts sample exactly the paths and sub-networks the peer does, so both
-- sides time the same work.
--   local R = dofile("bench/pyrandom.lua").new(0)
--   R:randrange(6)  R:choice({3, 5})  R:sample(6, 6)
local M = {}
M.__index = M

local N, MM = 624, 397
local MASK = 0xffffffff

local function init_genrand(mt, s)
  mt[0] = s & MASK
  for i = 1, N - 1 do
    mt[i] = (1812433253 * (mt[i - 1] ~ (mt[i - 1] >> 30)) + i) & MASK
  end
end

--- A generator seeded like Python's random.seed(seed) (seed: integer >= 0).
function M.new(seed)
  local self = setmetatable({ mt = {}, mti = N + 1 }, M)
  local key = {}
  repeat -- 32-bit words of the seed, least significant first ([0] for 0)
    key[#key + 1] = seed & MASK
    seed = seed >> 32
  until seed == 0
  local mt = self.mt
  init_genrand(mt, 19650218)
  local i, j = 1, 0
  for _ = 1, math.max(N, #key) do
    mt[i] = ((mt[i] ~ ((mt[i - 1] ~ (mt[i - 1] >> 30)) * 1664525)) + key[j + 1] + j) & MASK
    i, j = i + 1, j + 1
    if i >= N then mt[0] = mt[N - 1]; i = 1 end
    if j >= #key then j = 0 end
  end
  for _ = 1, N - 1 do
    mt[i] = ((mt[i] ~ ((mt[i - 1] ~ (mt[i - 1] >> 30)) * 1566083941)) - i) & MASK
    i = i + 1
    if i >= N then mt[0] = mt[N - 1]; i = 1 end
  end
  mt[0] = 0x80000000
  self.mti = N
  return self
end

--- The next 32-bit output (genrand_uint32).
function M:uint32()
  local mt = self.mt
  if self.mti >= N then
    for k = 0, N - 1 do
      local y = (mt[k] & 0x80000000) | (mt[(k + 1) % N] & 0x7fffffff)
      local v = mt[(k + MM) % N] ~ (y >> 1)
      if y & 1 == 1 then v = v ~ 0x9908b0df end
      mt[k] = v
    end
    self.mti = 0
  end
  local y = mt[self.mti]
  self.mti = self.mti + 1
  y = y ~ (y >> 11)
  y = y ~ ((y << 7) & 0x9d2c5680)
  y = y ~ ((y << 15) & 0xefc60000)
  return y ~ (y >> 18)
end

--- random.getrandbits(k), 1 <= k <= 32.
function M:getrandbits(k) return self:uint32() >> (32 - k) end

--- random._randbelow(n): uniform in [0, n), by rejection on bit_length(n) bits.
function M:randbelow(n)
  local k = 0
  while (1 << k) <= n do k = k + 1 end
  local r = self:getrandbits(k)
  while r >= n do r = self:getrandbits(k) end
  return r
end

--- random.randrange(n): [0, n).
function M:randrange(n) return self:randbelow(n) end

--- random.choice(list) (a Lua list).
function M:choice(list) return list[self:randbelow(#list) + 1] end

--- random.sample(range(n), k) for the small n the benches use (the pool
-- algorithm, taken when n <= 21 + 4^ceil(log4(3k))): a list of 0-based values.
function M:sample(n, k)
  local pool, out = {}, {}
  for i = 0, n - 1 do pool[i] = i end
  for i = 0, k - 1 do
    local j = self:randbelow(n - i)
    out[i + 1] = pool[j]
    pool[j] = pool[n - i - 1]
  end
  return out
end

return M
