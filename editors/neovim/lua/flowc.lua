-- Neovim support for Flow: filetype, and `flowc lsp` as the language server
-- for every .flow buffer (diagnostics, hover, go to definition, references,
-- completion, symbols, formatting, code actions).
--
--   vim.opt.runtimepath:append('/path/to/flowc/editors/neovim')
--   require('flowc').setup()            -- or setup({ cmd = { '/path/to/flowc', 'lsp' } })
--
-- Works with Neovim 0.7 (vim.lsp.start_client) and later (vim.lsp.start).
local M = {}

local function root_dir(file)
  local dir = vim.fn.fnamemodify(file, ':p:h')
  local found = vim.fn.finddir('.git', dir .. ';')
  if found ~= '' then
    return vim.fn.fnamemodify(found, ':p:h:h')
  end
  return dir
end

function M.setup(opts)
  opts = opts or {}
  local cmd = opts.cmd or { 'flowc', 'lsp' }
  vim.filetype.add({ extension = { flow = 'flow' } })
  -- Neovim 0.7 reads vim.filetype.add only with g:do_filetype_lua set.
  vim.api.nvim_create_autocmd({ 'BufRead', 'BufNewFile' }, {
    pattern = '*.flow',
    callback = function() vim.bo.filetype = 'flow' end,
  })
  local clients = {}
  local function attach(buf)
    local file = vim.api.nvim_buf_get_name(buf)
    local root = root_dir(file)
    local config = {
      name = 'flowc',
      cmd = cmd,
      root_dir = root,
      on_attach = opts.on_attach,
    }
    if vim.lsp.start then
      vim.lsp.start(config, { bufnr = buf })
      return
    end
    local id = clients[root]
    if not id or not vim.lsp.get_client_by_id(id) then
      id = vim.lsp.start_client(config)
      clients[root] = id
    end
    if id then
      vim.lsp.buf_attach_client(buf, id)
    end
  end
  vim.api.nvim_create_autocmd('FileType', {
    pattern = 'flow',
    callback = function(args) attach(args.buf) end,
  })
end

return M
