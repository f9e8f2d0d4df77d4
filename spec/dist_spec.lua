--- nasrt.dist: the single-process behaviour (always), and, when `mpirun`
-- is on PATH and nasrt was built with MPI, the collectives and tiny
-- recipes run with 1 and 2 ranks (loopback, shared memory) checked against
-- the plain single-process run at the same global batch.
local nasrt = require "nasrt"
local dist = require "nasrt.dist"
local search = require "nasrt.search"
local recipe = require "nasrt.recipe"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("nasrt.dist in one process", function()
  it("is rank 0 of 1 and its collectives are copies", function()
    assert.equal(0, dist.rank())
    assert.equal(1, dist.size())
    assert.is_false(dist.active())
    local t = nasrt.tensor { 1, 2 }
    dist.allreduce({ t }, "mean")
    assert.same({ 1, 2 }, t:totable())
    assert.same({ { a = 1 } }, dist.allgather { a = 1 })
    assert.same({ 4, 5 }, { dist.sum(4, 5) })
    local x = nasrt.tensor { { 1 }, { 2 } }
    assert.equal(x, (dist.shard(x)))
    local loader = {}
    assert.equal(loader, dist.sharded(loader))
  end)

  it("encodes plain values exactly (integers stay integers)", function()
    local v = { 1, 2.5, "x", true, false, { a = -3, b = { 1e300, 0.1 } }, [10] = "ten" }
    local back = dist.decode(dist.encode(v))
    assert.same(v, back)
    assert.equal("integer", math.type(back[1]))
    assert.equal("float", math.type(back[2]))
    assert.equal(0.1, back[6].b[2])
    assert.has_error(function() dist.encode { nasrt.zeros { 1 } } end,
      "dist: cannot send a tensor (plain values only; tensors go through dist.broadcast / dist.allreduce)")
    assert.has_error(function() dist.encode(print) end)
  end)

  it("splits a batch of n rows into contiguous, even shards", function()
    local rows = {}
    for r = 0, 2 do
      local s, len = dist.shard_range(10, r, 3)
      rows[#rows + 1] = { s, len }
    end
    assert.same({ { 1, 3 }, { 4, 3 }, { 7, 4 } }, rows)
    assert.same({ 1, 0 }, { dist.shard_range(1, 0, 2) })
    assert.same({ 1, 1 }, { dist.shard_range(1, 1, 2) })
  end)

  it("map evaluates in order and leaves the generator alone only across ranks", function()
    local res = dist.map({ 3, 4 }, function(v, i) return v * v, i end)
    assert.same({ { n = 2, 9, 1 }, { n = 2, 16, 2 } }, res)
  end)

  it("runs fn without collectives in independent and restores the switch", function()
    local before = dist.set_sync_bn(true)
    assert.has_error(function() dist.independent(function() error("boom", 0) end) end, "boom")
    assert.is_true(dist.set_sync_bn(before))
  end)
end)

describe("search.upcoming", function()
  local choices = { 3, 3, 3, 3 }
  local function score(arch)
    local s = 0
    for g, v in ipairs(arch) do s = s + v * g end
    return s
  end

  -- the archs a real step scores, in order
  local function scored_by_step(s)
    local got, orig = {}, s.score
    s.score = function(a) got[#got + 1] = table.concat(a, ","); return orig(a) end
    s:step()
    s.score = orig
    return got
  end

  -- asks upcoming until nothing is missing, scoring what it lists
  local function prefetch(s, cache, want)
    local rounds = 0
    while true do
      local up = search.upcoming(s, { want = want or 100, max_steps = 1,
        known = function(a) return cache[table.concat(a, ",")] end })
      if #up == 0 then return rounds end
      for _, a in ipairs(up) do cache[table.concat(a, ",")] = score(a) end
      rounds = rounds + 1
    end
  end

  it("lists what the next evolution step scores, changing nothing, until nothing is missing", function()
    local evo = search.evolution { choices = choices, seed = 3, score = score, population = 6,
      select = 2, mutation = 3, crossover = 3, epochs = 3 }
    local cache = {}
    for step = 1, 3 do
      local st = recipe.encode(evo:state())
      local rounds = prefetch(evo, cache)
      assert.equal(st, recipe.encode(evo:state()))
      -- the first step breeds from the population it scores itself: 2 rounds
      assert.equal(step == 1 and 2 or 1, rounds)
      for _, k in ipairs(scored_by_step(evo)) do
        assert.is_not_nil(cache[k], ("step %d scored %s, which was not listed"):format(step, k))
      end
    end
  end)

  it("evaluate_parallel scores every arch, in order, with its extra", function()
    local scores, extras = search.evaluate_parallel({ { 1, 1, 1, 1 }, { 3, 2, 1, 1 } },
      function(a) return score(a), { first = a[1] } end)
    assert.same({ 10, 14 }, scores)  -- sum of gene * position
    assert.same({ { first = 1 }, { first = 3 } }, extras)
  end)

  it("looks several random-search steps ahead and stops when nothing is missing", function()
    local rnd = search.random { choices = choices, seed = 5, score = score, n = 6 }
    local up = search.upcoming(rnd, { want = 3 })
    assert.equal(3, #up)
    local real = {}
    for i = 1, 3 do real[i] = table.concat(select(1, rnd:step()), ",") end
    for i = 1, 3 do assert.equal(real[i], table.concat(up[i], ",")) end
    -- everything known: one step looked at, nothing listed
    local known = function(a) return score(a) end
    assert.same({}, search.upcoming(rnd, { known = known, want = 3 }))
  end)
end)

-- ------------------------------------------------------------------ MPI

local function have_mpirun()
  return os.execute("command -v mpirun >/dev/null 2>&1") == true
end

local runnable = dist.compiled() and have_mpirun()
if not runnable then
  io.stderr:write("\n[dist_spec] mpirun or an MPI build is missing: the multi-rank specs are " ..
    "SKIPPED (apt-get install openmpi-bin libopenmpi-dev, then rebuild)\n")
end

local function mpirun(np)
  -- loopback only (shared memory and self); OpenMPI refuses root without these
  return ("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 " ..
    "mpirun --oversubscribe --mca btl self,vader -np %d "):format(np)
end

local function run(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>" .. sh_quote(os.tmpname()))
  return ok == true
end

local tmp_root
local function tmpdir(name)
  if not tmp_root then
    tmp_root = os.tmpname()
    os.remove(tmp_root)
    recipe.mkdirs(tmp_root)
  end
  return tmp_root .. "/" .. name
end
teardown(function() if tmp_root then os.execute("rm -rf " .. sh_quote(tmp_root)) end end)

local function records(dir, field, value)
  local out = {}
  for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if r[field] == value then out[#out + 1] = r end
  end
  return out
end

local function flat(v, acc)
  acc = acc or {}
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do flat(v[k], acc) end
  elseif type(v) == "number" then
    acc[#acc + 1] = v
  end
  return acc
end

local function close(a, b, tol, what)
  assert.is_true(math.abs(a - b) <= tol * math.max(1, math.abs(a)),
    ("%s: %.9g vs %.9g"):format(what, a, b))
end

local describe_mpi = runnable and describe or function(name, fn)
  describe(name, function() pending("mpirun not available: skipped") end)
end

describe_mpi("nasrt.dist over MPI (mpirun, loopback)", function()
  local bin = H.nasrt_bin()

  it("sums, averages, broadcasts, gathers and shards with 2 ranks", function()
    local out = tmpdir("coll.json")
    assert.is_true(run(mpirun(2) .. sh_quote(bin) .. " --threads 1 spec/dist_collectives.lua " ..
      sh_quote(out)), "mpirun failed")
    local all = recipe.decode(recipe.read_file(out))
    assert.equal(2, #all)
    for r, o in ipairs(all) do
      assert.equal(r - 1, o.rank)
      assert.equal(2, o.size)
      assert.same({ 3, 6 }, o.sum)           -- (1 + 2), (2 + 4)
      assert.same({ { 10 } }, o.sum2)        -- 0 + 10, same flat buffer
      assert.same({ 1.5 }, o.mean)
      assert.same({ 3, 1 }, o.numbers)
      assert.same({ 1.5, 1.5 }, o.g1)        -- (1 + 2) / 2
      assert.same({ 5, 5, 5 }, o.g2)         -- only rank 1 had one: (0 + 10) / 2, on both
      assert.is_false(o.g3)                  -- nobody had one: still none
      assert.same({ 1.5, 1.5 }, o.g1_again)
      assert.equal(7.5, o.norm)              -- |(4.5, 6)|: the averaged gradient's norm
      assert.same({ -4.5, -6 }, o.w)
      assert.same({ 1, 1 }, o.bcast)         -- from rank 1
      assert.same({ a = 1, b = { 2.5, "x", true }, i = 3 }, o.value)
      assert.same({ { rank = 0, x = 0 }, { rank = 1, x = 1.5 } }, o.gather)
      assert.same({ 1, 4, 9, 16, 25 }, o.map)
      assert.same({ 0, 1, 0, 1, 0 }, o.map_rank)
      assert.is_true(o.sync_bn)
      -- synchronised BN on 3 + 3 rows = BN on the 6 rows in one process
      assert.is_true(o.bn.scale > 0.1)
      for _, k in ipairs { "y", "dx", "dw", "db", "rm", "rv" } do
        assert.is_true(o.bn[k] <= 2e-6, ("batch_norm %s differs by %g"):format(k, o.bn[k]))
      end
    end
    assert.same({ { 1 }, { 2 } }, all[1].shard)
    assert.same({ { 3 }, { 4 }, { 5 } }, all[2].shard)
  end)

  -- a recipe run three ways at the same global batch: plain nasrt, and
  -- mpirun with 1 and 2 ranks; `compare(a, b)` asserts on the run dirs
  local function three_ways(name, script, args, compare)
    local dirs = {}
    local base = sh_quote(bin) .. " --threads 1 " .. script .. " " .. args .. " --quiet --out="
    dirs.single = tmpdir(name .. "-single")
    assert.is_true(run(base .. sh_quote(dirs.single)), name .. ": single process failed")
    for _, np in ipairs(name == "darts" and { 1, 2 } or { 2 }) do
      local d = tmpdir(("%s-np%d"):format(name, np))
      assert.is_true(run(mpirun(np) .. base .. sh_quote(d)), ("%s: mpirun -np %d failed"):format(name, np))
      dirs[np] = d
    end
    if dirs[1] then compare(dirs.single, dirs[1], 0) end
    compare(dirs.single, dirs[2], 2e-5)
  end

  it("DARTS (first order): the same losses, alphas and genotype with 1 and 2 ranks", function()
    three_ways("darts", "recipes/darts.lua", "--C=4 --layers=2 --steps=2 --size=8 --train_limit=32 " ..
      "--val_limit=32 --batch_size=16 --epochs=2 --ckpt_every=3",
      function(a, b, tol)
        local sa, sb = records(a, "kind", "step"), records(b, "kind", "step")
        assert.equal(4, #sa)
        assert.equal(#sa, #sb)
        for i = 1, #sa do
          for _, k in ipairs { "train_loss", "arch_loss", "train_acc" } do
            close(sa[i][k], sb[i][k], tol, ("step %d %s"):format(i, k))
          end
        end
        local ea, eb = records(a, "kind", "epoch"), records(b, "kind", "epoch")
        assert.equal(2, #eb)
        for e = 1, 2 do
          close(ea[e].val_loss, eb[e].val_loss, tol, "val_loss")
          close(ea[e].val_acc, eb[e].val_acc, tol, "val_acc")
          local fa, fb = flat(ea[e].alphas), flat(eb[e].alphas)
          assert.equal(#fa, #fb)
          for i = 1, #fa do close(fa[i], fb[i], tol, "alpha " .. i) end
        end
        assert.equal(recipe.read_file(a .. "/genotype.txt"), recipe.read_file(b .. "/genotype.txt"))
        -- rank 0 alone wrote the directory: one config, one log line per step
        assert.is_true(recipe.exists(b .. "/checkpoint.nrck"))
      end)
  end)

  it("SPOS: the same training losses, candidate scores, ranking and arch with 2 ranks", function()
    three_ways("spos", "recipes/spos.lua", "--input_size=8 --batch_size=8 --train_limit=64 " ..
      "--val_limit=32 --calib_batches=2 --calib_batch_size=8 --val_batch_size=16 --stem=4 " ..
      "--widths=8,16 --repeats=1,1 --last=16 --steps=4 --evo_epochs=2 --population=4 " ..
      "--select=2 --mutation=2 --crossover=2 --dropout=0 --ranking=3 --ranking_steps=2",
      function(a, b, tol)
        local sa, sb = records(a, "event", "step"), records(b, "event", "step")
        assert.equal(4, #sa)
        assert.equal(#sa, #sb)
        for i = 1, #sa do
          close(sa[i].loss, sb[i].loss, tol, "loss of step " .. i)
          assert.same(sa[i].archs or sa[i].arch, sb[i].archs or sb[i].arch)
        end
        local function scores(d)
          local m = {}
          for _, r in ipairs(records(d, "event", "eval")) do m[table.concat(r.arch, ",")] = r.score end
          return m
        end
        local ma, mb = scores(a), scores(b)
        assert.is_true(next(ma) ~= nil)
        for k, v in pairs(ma) do close(v, mb[k] or -1, tol, "score of " .. k) end
        local ra = recipe.decode(recipe.read_file(a .. "/ranking.json"))
        local rb = recipe.decode(recipe.read_file(b .. "/ranking.json"))
        assert.equal(3, #rb.rows)
        for i = 1, 3 do
          close(ra.rows[i].standalone, rb.rows[i].standalone, tol, "stand-alone " .. i)
          close(ra.rows[i].supernet, rb.rows[i].supernet, tol, "supernet " .. i)
        end
        assert.equal(recipe.read_file(a .. "/arch.txt"), recipe.read_file(b .. "/arch.txt"))
      end)
  end)

  it("FairNAS --paths_per_rank: the m paths split over 2 ranks give the one-process losses", function()
    local args = "--input_size=8 --batch_size=8 --train_limit=64 --val_limit=32 --calib_batches=2 " ..
      "--calib_batch_size=8 --val_batch_size=16 --stem=8 --stages=8:1:2,16:1:1 --head=16 " ..
      "--steps=3 --evo_epochs=1 --population=4 --select=2 --mutation=2 --crossover=2 " ..
      "--dropout=0 --paths_per_rank --quiet --out="
    local a, b = tmpdir("fair-single"), tmpdir("fair-np2")
    assert.is_true(run(sh_quote(bin) .. " --threads 1 recipes/fairnas.lua " .. args .. sh_quote(a)))
    assert.is_true(run(mpirun(2) .. sh_quote(bin) .. " --threads 1 recipes/fairnas.lua " .. args ..
      sh_quote(b)))
    local sa, sb = records(a, "event", "step"), records(b, "event", "step")
    assert.equal(3, #sb)
    for i = 1, 3 do
      close(sa[i].loss, sb[i].loss, 2e-5, "loss of step " .. i)
      close(sa[i].acc, sb[i].acc, 1e-9, "acc of step " .. i)
      close(sa[i].grad_norm or 0, sb[i].grad_norm or 0, 2e-5, "grad norm of step " .. i)
    end
  end)

  -- every other recipe, on the tiny configurations of scripts/killtest.lua
  -- (the determinism spec's), without the random masks that each rank
  -- draws for its own rows (dropout, drop-connect, drop-path, cutout): 2
  -- ranks log the one-process losses and find its architecture.  Scored
  -- candidates are compared by architecture: under MPI REA scores the
  -- candidates of the next cycles ahead, some of which it never needs.
  local K = dofile("scripts/killtest.lua")
  local RESULT = { agnas = "arch.json", att_darts = "genotype.txt", gdas = "genotype.txt",
                   fairnas = "arch.txt", attentivenas = "arch.txt", random = "arch.txt",
                   rea = "arch.txt" }
  local NO_MASKS = { attentivenas = { "--dropout=0", "--drop_connect=0" }, rea = { "--dropout=0" },
                     random = { "--dropout=0" }, fairnas = { "--dropout=0" },
                     train = { "--cutout=0", "--drop_path=0" } }
  for _, name in ipairs { "agnas", "att_darts", "gdas", "fairnas", "attentivenas", "random", "rea",
                          "train" } do
    it(name .. ": 2 ranks log the one-process losses and find its architecture", function()
      local args = {}
      for _, a in ipairs(K.CONFIGS[name]) do
        if a ~= "--quiet" then args[#args + 1] = sh_quote(a) end
      end
      for _, a in ipairs(NO_MASKS[name] or {}) do args[#args + 1] = a end
      local base = sh_quote(bin) .. " --threads 1 recipes/" .. name .. ".lua " ..
        table.concat(args, " ") .. " --quiet --out="
      local a, b = tmpdir(name .. "-single"), tmpdir(name .. "-np2")
      assert.is_true(run(base .. sh_quote(a)), name .. ": single process failed")
      assert.is_true(run(mpirun(2) .. base .. sh_quote(b)), name .. ": mpirun -np 2 failed")
      -- every loss, accuracy and score of every log record, in order;
      -- those of scored candidates by architecture
      local function values(dir)
        local out, evals = {}, {}
        for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
          local keys = {}
          for k, v in pairs(r) do
            if type(v) == "number" and (k:find("loss", 1, true) or k:find("acc", 1, true) or
                                        k:find("score", 1, true)) then
              keys[#keys + 1] = k
            end
          end
          table.sort(keys)
          local list = out
          if r.event == "eval" then
            list = {}
            evals[recipe.encode(r.arch)] = list
          end
          for _, k in ipairs(keys) do list[#list + 1] = { k, r[k] } end
        end
        return out, evals
      end
      local function same_values(va, vb, what)
        assert.equal(#va, #vb, what)
        for i = 1, #va do
          assert.equal(va[i][1], vb[i][1])
          close(va[i][2], vb[i][2], 1e-4, ("%s: %s%s (value %d)"):format(name, what, va[i][1], i))
        end
      end
      local va, ea = values(a)
      local vb, eb = values(b)
      assert.is_true(#va >= 3, name .. ": too few losses logged")
      same_values(va, vb, "")
      for arch, list in pairs(ea) do
        assert.is_table(eb[arch], name .. ": 2 ranks did not score " .. arch)
        same_values(list, eb[arch], "candidate " .. arch .. " ")
      end
      if RESULT[name] then
        local fa, fb = recipe.read_file(a .. "/" .. RESULT[name]), recipe.read_file(b .. "/" .. RESULT[name])
        if RESULT[name] == "arch.json" then -- scores may differ in the last digits
          local function same(x, y, path)
            if type(x) == "number" and type(y) == "number" then
              return close(x, y, 1e-4, name .. ": arch.json " .. path)
            end
            assert.equal(type(x), type(y), name .. ": arch.json " .. path)
            if type(x) ~= "table" then return assert.equal(x, y, name .. ": arch.json " .. path) end
            for k, v in pairs(x) do same(v, y[k], path .. "." .. tostring(k)) end
            for k in pairs(y) do assert.is_not_nil(x[k], name .. ": arch.json " .. path .. "." .. tostring(k)) end
          end
          same(recipe.decode(fa), recipe.decode(fb), "")
        else
          assert.equal(fa, fb)
        end
      end
    end)
  end
end)
