package firstboot

import "syscall"

const syscallNoCTTY = syscall.O_NOCTTY
