module oomhero.example/app

go 1.19
