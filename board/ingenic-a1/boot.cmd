# OxiNVR A/B boot selector for the Ingenic A1 (U-Boot hush script; docs/APPLIANCE.md).
# Compiled to boot.scr by post-image.sh:  mkimage -A mips -O linux -T script -C none
# SD card: U-Boot's bootcmd loads it from partition 1:
#   setenv bootcmd 'ext2load mmc 0:1 ${loadaddr} boot.scr && source ${loadaddr}'
# NAND:    from the UBI volume "bootscr" (oxinvr_media=nand):
#   setenv bootcmd 'ubi part ubi && ubi read ${loadaddr} bootscr && source ${loadaddr}'
#
# State, in the U-Boot environment (Linux: fw_printenv / fw_setenv, fw_env.config):
#   BOOT_ORDER="A B"  BOOT_A_LEFT=3  BOOT_B_LEFT=3  [BOOT_LIMIT=3]
# The first slot of BOOT_ORDER with tries left boots, after its counter went down
# by one and the environment was saved. `oxinvr ota mark-good` puts it back up once
# the system is healthy. No slot with tries left: both get BOOT_LIMIT again and the
# first of BOOT_ORDER boots (oxinvr.reset=1 tells the system not to reboot-loop).
# Counters are single digits: setexpr computes in hex.
# Needs CONFIG_HUSH_PARSER, CONFIG_CMD_SETEXPR, CONFIG_CMD_EXT2 (SD) or
# CONFIG_CMD_UBI (NAND), CONFIG_CMD_SAVEENV.

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
test -n "${BOOT_LIMIT}" || setenv BOOT_LIMIT 3
test -n "${oxinvr_media}" || setenv oxinvr_media mmc
test -n "${oxinvr_console}" || setenv oxinvr_console ttyS1,115200n8
# The SD card's boot partition for U-Boot, and its partitions' names for Linux.
test -n "${oxinvr_bootpart}" || setenv oxinvr_bootpart "mmc 0:1"
test -n "${oxinvr_rootdev}" || setenv oxinvr_rootdev /dev/mmcblk0p

setenv oxinvr_slot
setenv oxinvr_reset 0
for s in ${BOOT_ORDER}; do
	if test -z "${oxinvr_slot}"; then
		if test "${s}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
			setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
			setenv oxinvr_slot A
		elif test "${s}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
			setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
			setenv oxinvr_slot B
		fi
	fi
done

if test -z "${oxinvr_slot}"; then
	echo "oxinvr: no slot has tries left: both get ${BOOT_LIMIT} again"
	setenv oxinvr_reset 1
	setenv BOOT_A_LEFT ${BOOT_LIMIT}
	setenv BOOT_B_LEFT ${BOOT_LIMIT}
	for s in ${BOOT_ORDER}; do
		test -z "${oxinvr_slot}" && setenv oxinvr_slot ${s}
	done
	if test "${oxinvr_slot}" = "A"; then
		setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
	else
		setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
	fi
fi

# The decremented counter reaches the flash BEFORE the slot boots.
saveenv
echo "oxinvr: slot ${oxinvr_slot} (left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT})"

setenv oxinvr_args "oxinvr.slot=${oxinvr_slot} oxinvr.reset=${oxinvr_reset} rootfstype=squashfs ro rootwait panic=5 ${oxinvr_extra_args}"
if test "${oxinvr_media}" = "nand"; then
	if test "${oxinvr_slot}" = "A"; then
		setenv oxinvr_vol 2
		setenv oxinvr_kvol kernel-a
	else
		setenv oxinvr_vol 3
		setenv oxinvr_kvol kernel-b
	fi
	ubi part ubi
	ubi read ${loadaddr} ${oxinvr_kvol}
	setenv bootargs "console=${oxinvr_console} ubi.mtd=ubi ubi.block=0,${oxinvr_vol} root=/dev/ubiblock0_${oxinvr_vol} ${oxinvr_args}"
else
	if test "${oxinvr_slot}" = "A"; then
		setenv oxinvr_part 2
	else
		setenv oxinvr_part 3
	fi
	# A per-slot kernel (uImage.A / uImage.B) wins over the shared uImage.
	ext2load ${oxinvr_bootpart} ${loadaddr} uImage.${oxinvr_slot} || ext2load ${oxinvr_bootpart} ${loadaddr} uImage
	setenv bootargs "console=${oxinvr_console} root=${oxinvr_rootdev}${oxinvr_part} ${oxinvr_args}"
fi
echo "oxinvr: bootargs ${bootargs}"
bootm ${loadaddr}

# Only reached if the kernel did not start: the counter is already down, try again.
echo "oxinvr: slot ${oxinvr_slot} did not boot; resetting"
reset
