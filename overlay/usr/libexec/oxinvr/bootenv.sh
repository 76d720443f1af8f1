# The A/B boot selector state file (boot.env on the boot partition), in busybox ash.
# Sourced by the QEMU initramfs selector (/init) and by ./boot-state. The Rust side
# (src/appliance/bootenv.rs, `oxinvr ota`) reads and writes the same file the same way:
#   BOOT_ORDER="A B"   slots in order of preference
#   BOOT_A_LEFT=3      boots slot A may still try before it counts as bad
#   BOOT_B_LEFT=3
# Other lines (comments, other keys, e.g. BOOT_LIMIT=3) are kept after these three.

# bootenv_read FILE: sets BOOT_ORDER, BOOT_A_LEFT, BOOT_B_LEFT, BOOT_LIMIT.
# Missing or bad values: the order gets the missing slot appended, a counter that
# is not a number counts as 0, BOOT_LIMIT defaults to 3. Fails if FILE is unreadable.
bootenv_read() {
    BOOT_ORDER= BOOT_A_LEFT= BOOT_B_LEFT= BOOT_LIMIT=3
    [ -r "$1" ] || { BOOT_ORDER="A B" BOOT_A_LEFT=0 BOOT_B_LEFT=0; return 1; }
    while IFS='=' read -r k v; do
        eval "$k=\$v"
    done <<EOT
$(sed -n -e 's/[[:space:]]*$//' \
    -e 's/^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}\(BOOT_ORDER\|BOOT_A_LEFT\|BOOT_B_LEFT\|BOOT_LIMIT\)=/\2=/p' "$1" |
  sed -e 's/^\([A-Z_]*\)="\(.*\)"$/\1=\2/' -e "s/^\([A-Z_]*\)='\(.*\)'\$/\1=\2/")
EOT
    o=
    for s in $BOOT_ORDER A B; do
        case $s in A|a) s=A ;; B|b) s=B ;; *) continue ;; esac
        case " $o " in *" $s "*) ;; *) o="$o $s" ;; esac
    done
    BOOT_ORDER=${o# }
    case $BOOT_A_LEFT in ''|*[!0-9]*) BOOT_A_LEFT=0 ;; esac
    case $BOOT_B_LEFT in ''|*[!0-9]*) BOOT_B_LEFT=0 ;; esac
    case $BOOT_LIMIT in ''|*[!0-9]*|0) BOOT_LIMIT=3 ;; esac
    return 0
}

# bootenv_write FILE: replaces FILE whole (temporary file, sync, rename, sync), the
# three keys first, every other line of the old file after them.
bootenv_write() {
    {
        echo "BOOT_ORDER=\"$BOOT_ORDER\""
        echo "BOOT_A_LEFT=$BOOT_A_LEFT"
        echo "BOOT_B_LEFT=$BOOT_B_LEFT"
        [ -r "$1" ] && grep -v -E '^[[:space:]]*(export[[:space:]]+)?BOOT_(ORDER|A_LEFT|B_LEFT)=' "$1"
        true
    } >"$1.tmp" || return 1
    sync
    mv -f "$1.tmp" "$1" && sync
}

# bootenv_select: the selector's decision. Sets SLOT (the first slot of BOOT_ORDER
# with tries left) and decrements its counter; if no slot has tries left, both get
# BOOT_LIMIT again, the first of BOOT_ORDER boots and RESET=1.
bootenv_select() {
    SLOT= RESET=0
    for s in $BOOT_ORDER; do
        eval "n=\$BOOT_${s}_LEFT"
        if [ "$n" -gt 0 ]; then SLOT=$s; break; fi
    done
    if [ -z "$SLOT" ]; then
        BOOT_A_LEFT=$BOOT_LIMIT BOOT_B_LEFT=$BOOT_LIMIT RESET=1
        SLOT=${BOOT_ORDER%% *}
    fi
    eval "BOOT_${SLOT}_LEFT=\$((BOOT_${SLOT}_LEFT - 1))"
}
