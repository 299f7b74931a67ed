" Flow (flowc workflow language) files
autocmd BufRead,BufNewFile *.flow set filetype=flow
