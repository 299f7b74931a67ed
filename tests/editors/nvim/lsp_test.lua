-- Headless Neovim against `flowc lsp`, run by tests/editors/run.sh:
--   FLOWC=… FLOW_REPO=… FLOW_NVIM_OUT=… nvim --headless --clean -c 'luafile tests/editors/nvim/lsp_test.lua'
-- Opens an example through editors/neovim's setup, asserts the diagnostics
-- Neovim receives (none for the clean example; then an error introduced in
-- the buffer is reported at its line with its code, and removing it clears
-- the list). Writes "ok - NAME" / "FAIL - NAME: why" lines to $FLOW_NVIM_OUT.
local results = {}
local function result(ok, name, why)
  table.insert(results, (ok and 'ok - ' or 'FAIL - ') .. name .. (ok and '' or (': ' .. tostring(why))))
end
local function finish()
  vim.fn.writefile(results, os.getenv('FLOW_NVIM_OUT'))
  vim.cmd('qall!')
end

local ok, err = pcall(function()
  local repo = os.getenv('FLOW_REPO')
  vim.opt.runtimepath:append(repo .. '/editors/neovim')
  -- Count what the server publishes, whatever Neovim does with it.
  local published = 0
  local default = vim.lsp.handlers['textDocument/publishDiagnostics']
  vim.lsp.handlers['textDocument/publishDiagnostics'] = function(e, r, ctx, c)
    published = published + 1
    return default(e, r, ctx, c)
  end
  require('flowc').setup({ cmd = { os.getenv('FLOWC'), 'lsp' } })

  local file = repo .. '/examples/invoice_reconciliation.flow'
  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  local buf = vim.api.nvim_get_current_buf()
  result(vim.bo[buf].filetype == 'flow', 'neovim: *.flow is filetype flow', vim.bo[buf].filetype)

  local got = vim.wait(20000, function() return published >= 1 end, 50)
  result(got, 'neovim: flowc lsp publishes diagnostics on open', 'nothing published in 20 s')
  local diags = vim.diagnostic.get(buf)
  result(#diags == 0, 'neovim: the clean example has no diagnostics', vim.inspect(diags))

  -- An error typed into the buffer (not saved): a flow that returns an
  -- undefined name.
  local last = vim.api.nvim_buf_line_count(buf)
  vim.api.nvim_buf_set_lines(buf, last, last, false, {
    'flow broken(q: string) -> string {',
    '  budget { tokens 1k, cost $0.01, steps 5, wall 1m }',
    '  return nope',
    '}',
  })
  got = vim.wait(20000, function() return #vim.diagnostic.get(buf) > 0 end, 50)
  diags = vim.diagnostic.get(buf)
  local found
  for _, d in ipairs(diags) do
    if d.code == 'N001' then found = d end
  end
  result(found ~= nil and found.lnum == last + 2 and found.col == 9
      and found.severity == vim.diagnostic.severity.ERROR and found.message:find('nope', 1, true) ~= nil
      and found.source == 'flowc',
    'neovim: an undefined name is reported at its line and column with its code',
    vim.inspect(diags))

  vim.api.nvim_buf_set_lines(buf, last, last + 4, false, {})
  got = vim.wait(20000, function() return #vim.diagnostic.get(buf) == 0 end, 50)
  result(got, 'neovim: removing the error clears the diagnostics', vim.inspect(vim.diagnostic.get(buf)))
end)
if not ok then
  result(false, 'neovim: the LSP test script ran', err)
end
finish()
